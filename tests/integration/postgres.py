"""A throwaway PostgreSQL cluster for tests: the Debian server binaries, a temp dir, a free port."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
MISSING_MESSAGE = (
    f"PostgreSQL 15 server binaries not found in {BIN_DIR}: `make test` installs the Debian "
    "`postgresql` package (or: apt-get install postgresql)"
)


def postgres_installed() -> bool:
    return all(os.access(BIN_DIR / tool, os.X_OK) for tool in ("initdb", "pg_ctl"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a server tool as the `postgres` user when we are root: initdb refuses to run as root."""
    if os.geteuid() == 0:
        args = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(args)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def _wait_until_accepting(url: str, deadline: float) -> None:
    import psycopg

    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class ThrowawayPostgres:
    """A running cluster in `root`; `stop` (a crash with mode "immediate") and `start` again on
    the same port, as a database restart looks to its clients."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = 0
        self.failure = ""  # what pg_ctl said when a start failed
        self._pg_ctl = str(BIN_DIR / "pg_ctl")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> bool:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {shlex.quote(str(self.root))} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = self.root / "server.log"
        started = _run(
            [self._pg_ctl, "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start"],
            self.root,
        )
        if started.returncode:
            self.failure = started.stderr + (
                log.read_text(errors="replace") if log.exists() else ""
            )
            return False
        _wait_until_accepting(self.url, time.monotonic() + 30)
        return True

    def stop(self, mode: str = "fast") -> None:
        _run([self._pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"], self.root)


@contextmanager
def restartable_postgres(attempts: int = 3) -> Iterator[ThrowawayPostgres]:
    """A fresh cluster (superuser `postgres`, trust auth, 127.0.0.1 only) for the block.

    The cluster trades durability for speed (fsync off): it lives only as long as the block.
    """
    if not postgres_installed():
        raise RuntimeError(MISSING_MESSAGE)
    root = Path(tempfile.mkdtemp(prefix="voice-agent-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        cluster = ThrowawayPostgres(root)
        initdb = [str(BIN_DIR / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust"]
        done = _run([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"], root)
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        for attempt in range(attempts):
            # The port is free now but may be taken before the server binds it: then try another.
            cluster.port = _free_port()
            if cluster.start():
                break
            if attempt == attempts - 1:
                raise RuntimeError(f"pg_ctl start failed:\n{cluster.failure}")
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def throwaway_postgres(attempts: int = 3) -> Iterator[str]:
    """Yield the URL of a fresh cluster that lives as long as the block."""
    with restartable_postgres(attempts) as cluster:
        yield cluster.url
