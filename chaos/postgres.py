"""A throwaway PostgreSQL cluster on loopback, for the test suites and `make chaos`.

Debian's `postgresql` package (`apt-get install -y postgresql`) keeps `initdb` and `pg_ctl` in a
versioned folder off PATH (`pg_config --bindir`, or /usr/lib/postgresql/N/bin). The cluster
lives in a temporary folder, listens on 127.0.0.1 on a free port, trusts local connections
(nothing else can reach it), skips fsync (it is thrown away), and is stopped by its `pg_ctl`.
Run as root, it runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "PostgreSQL binaries not found: install Debian's postgresql package (apt-get install -y postgresql)"


def bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates: list[str] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        candidates.append(out)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """`with ThrowawayPostgres() as pg: url = pg.new_database()`."""

    def __init__(self) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.bin = found
        self.port = _free_port()
        # Under /tmp itself: pytest's own temporary folders are private to their user.
        self.root = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> ThrowawayPostgres:
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=400"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "airlock") -> str:
        """A fresh, empty database; its `AIRLOCK_DB` URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
