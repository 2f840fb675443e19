"""A scratch ext4 file system on a loop device, with its own read-ahead, for
measuring what a process maps of a binary: copy the binary in, `cold()`,
then run it from there."""
import os
import subprocess
import time


def run(*cmd):
    """Runs `cmd`, raising if it fails; its stdout, stripped."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


class LoopFs:
    def __init__(self, workdir, size_bytes):
        self.img, self.mnt = f"{workdir}/fs.img", f"{workdir}/mnt"
        os.makedirs(self.mnt, exist_ok=True)
        run("truncate", "-s", str(size_bytes), self.img)
        run("mkfs.ext4", "-q", "-F", self.img)
        self.dev = run("losetup", "-f", "--show", self.img)
        try:
            run("mount", self.dev, self.mnt)
        except subprocess.CalledProcessError:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True)
            raise

    def install(self, binary, name):
        """Copies `binary` to bin NAME/berth, with the shim's link beside
        it; returns that directory."""
        d = f"{self.mnt}/{name}"
        os.makedirs(d)
        run("cp", binary, f"{d}/berth")
        os.symlink("berth", f"{d}/containerd-shim-berth-v1")
        return d

    def cold(self, read_ahead_kb):
        """Remounts with nothing of the file system in the page cache, and
        the device's read-ahead set to `read_ahead_kb`."""
        self.unmount()
        with open(f"/sys/block/{os.path.basename(self.dev)}/queue/read_ahead_kb", "w") as f:
            f.write(str(read_ahead_kb))
        run("mount", self.dev, self.mnt)

    def unmount(self):
        # The processes of a containerd just stopped may take a moment to go.
        for _ in range(50):
            if subprocess.run(["umount", self.mnt], capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.mnt} stays busy: {subprocess.run(['fuser', '-vm', self.mnt], capture_output=True, text=True).stderr}")

    def close(self):
        """Unmounts (waiting for the processes that ran from it to go) and
        lets go of the loop device. Raises if the mount stays busy: the
        work directory is then not to be removed."""
        if os.path.ismount(self.mnt):
            self.unmount()
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)
