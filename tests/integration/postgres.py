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


@contextmanager
def throwaway_postgres(attempts: int = 3) -> Iterator[str]:
    """Yield the URL of a fresh cluster (superuser `postgres`, trust auth, 127.0.0.1 only).

    The cluster trades durability for speed (fsync off): it lives only as long as the block.
    """
    if not postgres_installed():
        raise RuntimeError(MISSING_MESSAGE)
    root = Path(tempfile.mkdtemp(prefix="voice-agent-pg-"))
    data = root / "data"
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        initdb = [str(BIN_DIR / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        done = _run([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"], root)
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        pg_ctl = str(BIN_DIR / "pg_ctl")
        for attempt in range(attempts):
            # The port is free now but may be taken before the server binds it: then try another.
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {shlex.quote(str(root))} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            log = root / "server.log"
            started = _run(
                [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], root
            )
            if started.returncode == 0:
                break
            if attempt == attempts - 1:
                server_log = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"pg_ctl start failed:\n{started.stderr}\n{server_log}")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            _wait_until_accepting(url, time.monotonic() + 30)
            yield url
        finally:
            _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
