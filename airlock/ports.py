"""Local TCP ports for `airlock dev`: whether one is taken, and by which process.

Linux only for naming the holder (it reads /proc/net/tcp and /proc/PID/fd, as `ss -p` does,
without needing `ss` or psutil); elsewhere, or when /proc does not say, the holder is "another
process"."""

from __future__ import annotations

import contextlib
import errno
import socket
from pathlib import Path

PROC = Path("/proc")
# /proc/net/tcp's `st` column: the kernel's TCP states.
LISTEN = "0A"


def accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def bindable(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR, as servers (Go's included)
    set it, so that connections a stopped server left in TIME_WAIT do not count as taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def holder(port: int, proc: Path = PROC) -> str:
    """Who holds a local TCP port: "pid 1234 (temporal)", or "another process" when /proc does not
    say (another user's process, a container boundary, not Linux)."""
    inodes = _socket_inodes(port, proc)
    if inodes:
        for pid_dir in proc.iterdir():
            if not pid_dir.name.isdigit():
                continue
            if _holds(pid_dir, inodes):
                name = "?"
                with contextlib.suppress(OSError):
                    name = (pid_dir / "comm").read_text().strip()
                return f"pid {pid_dir.name} ({name})"
    return "another process"


def _socket_inodes(port: int, proc: Path) -> set[str]:
    """The inodes of the sockets bound to `port`, listening ones first."""
    listening: set[str] = set()
    bound: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[9] != "0":
                (listening if fields[3] == LISTEN else bound).add(fields[9])
    return listening or bound


def _holds(pid_dir: Path, inodes: set[str]) -> bool:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    try:
        fds = list((pid_dir / "fd").iterdir())
    except OSError:  # gone, or another user's
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if str(fd.readlink()) in wanted:
                return True
    return False
