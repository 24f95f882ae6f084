"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, postgres on loopback.

No running service is assumed: `make test` installs Debian's server binaries, and each pytest
session (each xdist worker) starts its own server and removes it at the end. Durability is not
what these tests check, so fsync is off.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_bindir() -> Path:
    """The newest installed PostgreSQL's bin dir (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        raise RuntimeError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: `make test` installs "
            "Debian's postgresql package"
        )
    return Path(found[-1]).parent


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the tests do run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PgServer:
    """One postgres process on 127.0.0.1:port, its cluster and sockets in a temp dir."""

    def __init__(self) -> None:
        self.bindir = server_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="od-runs-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """initdb, start postgres, and return once it accepts connections."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self._launch()

    def _launch(self) -> None:
        """Start postgres on the cluster and port, and return once it accepts connections."""
        data = self.root / "data"
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.process = subprocess.Popen(
            _as_postgres(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        from tests.conftest import poll

        def accepting() -> bool:
            if self.process.poll() is not None:
                return True  # it died: say so below, with its log
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        with contextlib.suppress(AssertionError):
            poll("postgres to accept connections", accepting, START_TIMEOUT)
        if self.process.poll() is not None or not accepting():
            log_text = (self.root / "server.log").read_text(errors="replace")
            raise RuntimeError(f"postgres did not start:\n{log_text}")

    def url(self, database: str) -> str:
        """A connection URL for a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            # FILE_COPY: a plain copy of the template, much faster than WAL_LOG without fsync.
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY = FILE_COPY')
        return self.url(name)

    def halt(self) -> None:
        """Fast shutdown (the database goes away), keeping the cluster for resume()."""
        self._shutdown()

    def resume(self) -> None:
        """Start the halted server again, same port, same data."""
        self._launch()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster."""
        self._shutdown()
        shutil.rmtree(self.root, ignore_errors=True)

    def _shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The postmaster runs under runuser: signal it by the pid it wrote itself.
            pid_file = self.root / "data" / "postmaster.pid"
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            except (OSError, ValueError, IndexError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
