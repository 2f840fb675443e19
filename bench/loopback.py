"""Helpers the HTTP benchmarks share: the two servers they compare, a free
loopback port, waiting for a server to listen, and wrk's latency figures
in milliseconds."""
import re
import socket
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def ms(v):
    n, unit = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]+", "", v)
    return n * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def servers(berth, wasmtime, component):
    """The command line of each server for a port: `berth serve` and
    `wasmtime serve -Scli` (the wasi:cli imports a Rust std component has;
    berth links all of WASI p2)."""
    return {
        "berth serve": lambda p: [berth, "serve", component, "--addr", f"127.0.0.1:{p}"],
        "wasmtime serve": lambda p: [wasmtime, "serve", "-Scli", "--addr", f"127.0.0.1:{p}", component],
    }
