//! `berth install containerd`: registers berth's runtime in a containerd
//! config (backup kept, idempotent, `--dry-run` shows the diff).
use crate::install;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum InstallCommand {
    /// Add the `berth` runtime (io.containerd.berth.v1) to containerd's config.
    Containerd {
        /// The containerd config to edit (created when missing).
        #[arg(long, default_value = "/etc/containerd/config.toml", value_name = "FILE")]
        config: PathBuf,
        /// Print the change as a diff and leave the file alone.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn install(cmd: InstallCommand) -> Result<i32> {
    let InstallCommand::Containerd { config, dry_run } = cmd;
    let shown = config.display().to_string();
    let old = match std::fs::read_to_string(&config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    };
    let edit = install::add_runtime(&shown, &old)?;
    if !edit.changed {
        println!("{shown} already has the berth runtime (io.containerd.berth.v1); nothing to do");
        return Ok(0);
    }
    if dry_run {
        print!("{}", install::diff(&shown, &old, &edit.new_text));
        return Ok(0);
    }
    let dir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !old.is_empty() {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let backup = PathBuf::from(format!("{shown}.berth-backup-{stamp}"));
        std::fs::copy(&config, &backup).with_context(|| format!("backing up {shown} to {}", backup.display()))?;
        println!("backup: {}", backup.display());
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {shown}"))?;
    std::io::Write::write_all(&mut tmp, edit.new_text.as_bytes()).with_context(|| format!("writing {shown}"))?;
    if let Ok(meta) = std::fs::metadata(&config) {
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.persist(&config).with_context(|| format!("writing {shown}"))?;
    println!("added runtime \"berth\" (io.containerd.berth.v1) to {shown} (schema version {})", edit.version);
    println!("next: put containerd-shim-berth-v1 on containerd's PATH and restart containerd; Kubernetes: a RuntimeClass with handler \"berth\"");
    Ok(0)
}
