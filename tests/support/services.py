"""Throwaway PostgreSQL and Redis servers for the tests and the benchmarks.

Each is started from the machine's own binaries in a fresh temporary directory on a free port,
and removed afterwards. Nothing touches a system-wide instance.
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ServiceUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb") or "").resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return None


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServiceUnavailable(f"nothing listening on port {port} after {timeout}s")


@dataclass
class Postgres:
    port: int
    datadir: Path
    run_as: list[str]
    bindir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout


@contextlib.contextmanager
def postgres(*, durable: bool = False, extra: tuple[str, ...] = ()) -> Iterator[Postgres]:
    """A PostgreSQL server. ``durable=False`` (tests) turns fsync off; benchmarks keep it on."""
    bindir = _pg_bindir()
    if bindir is None:
        raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    base = Path(tempfile.mkdtemp(prefix="dropship-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        user = os.environ.get("DROPSHIP_TEST_PG_USER") or "postgres"
        run_as = ["runuser", "-u", user, "--"]
        shutil.chown(base, user=user)
    datadir = base / "data"
    port = free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    options = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        f"-c unix_socket_directories={base}",
        "-c max_connections=200",
    ]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    options += list(extra)
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-l",
            str(base / "log"),
            "-o",
            " ".join(options),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(port=port, datadir=datadir, run_as=run_as, bindir=bindir)
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes] | None
    dir: Path
    args: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _wait_port(self.port)


@contextlib.contextmanager
def redis(*, appendonly: bool = False) -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server not found")
    base = Path(tempfile.mkdtemp(prefix="dropship-redis-"))
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(base),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
    ]
    server = Redis(port=port, process=None, dir=base, args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
