"""A PostgreSQL cluster of a test's own (initdb + pg_ctl), on a free port with its own data
directory, so that the test can stop the server and start it again: a real outage
without touching the PostgreSQL the rest of the suite shares. As root, the cluster runs
as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.e2e.stack import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and shutil.which("initdb"):
        found = [shutil.which("initdb")]
    if not found:
        service_missing("initdb (PostgreSQL server binaries)", FileNotFoundError("/usr/lib/postgresql/*/bin"))
    return Path(found[-1]).parent


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        # Not under pytest's tmp_path: its folders are private to root, and the server
        # runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="gradwatch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "root", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Fast shutdown: every session is cut, new connections are refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        argv = [str(self.bin / program), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}\n{log[-3000:]}")
