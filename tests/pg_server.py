"""A throwaway PostgreSQL server that a test may stop and start at will.

The shared server on 127.0.0.1:5432 serves every other test (and other people's test
runs) at the same time, so a fault test must never stop it. :class:`ThrowawayPostgres`
runs ``initdb`` into a fresh temporary directory and serves it on a free port of
127.0.0.1, with trust authentication and its socket in the same directory.

``initdb`` and ``postgres`` refuse to run as root; as root (CI on this machine) every
command runs as the ``postgres`` OS user through ``runuser``, on a directory owned by
that user. The binaries are looked up in ``$HYPERPRIOR_TEST_PG_BIN``, then on ``PATH``,
then under ``/usr/lib/postgresql/*/bin`` (newest first).

Imported by tests as ``from pg_server import ...`` (``tests/`` is on ``sys.path``
through its ``conftest.py``; a ``tests`` package installed by a dependency shadows
``tests.pg_server``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresUnavailable", "ThrowawayPostgres", "find_pg_bin", "throwaway_postgres"]

_SERVICE_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_pg_bin() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        PostgresUnavailable: when they are nowhere to be found (the message says how
            to install them).
    """
    candidates: list[Path] = []
    if os.environ.get("HYPERPRIOR_TEST_PG_BIN"):
        candidates.append(Path(os.environ["HYPERPRIOR_TEST_PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    candidates += [
        p.parent
        for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)[::-1]
    ]
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in $HYPERPRIOR_TEST_PG_BIN, "
        "on PATH or under /usr/lib/postgresql/*/bin: install them "
        "(apt-get install postgresql), or set HYPERPRIOR_TEST_POSTGRES=skip to skip the "
        "PostgreSQL tests"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A private PostgreSQL server in a temporary directory.

    Args:
        bin_dir: where the server binaries are (default: :func:`find_pg_bin`).

    Use as a context manager: the server is created and started on entry, stopped
    (immediately) and deleted on exit.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._service_user = pwd.getpwnam(_SERVICE_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and there is no '{_SERVICE_USER}' OS user to run "
                    "the PostgreSQL server as (initdb and postgres refuse root)"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root, and runuser is missing")
        # Not under pytest's tmp_path: its parents are private to root, and the
        # server runs as another user.
        self.root = Path(tempfile.mkdtemp(prefix="hp-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", _SERVICE_USER, "--", *args]
        return list(args)

    def _call(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            self._cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}{log}"
            )

    def init(self) -> None:
        """Create the cluster (``initdb``; trust authentication, no fsync of the files)."""
        if self._as_root:
            os.chown(self.root, self._service_user.pw_uid, self._service_user.pw_gid)
        self._call(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",  # only initdb's own files; the server itself keeps fsync on
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._call(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, close connections)."""
        self._call(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs and delete its files."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started :class:`ThrowawayPostgres`, for fixtures.

    Fails the test with a message saying what is missing, or skips it when
    ``HYPERPRIOR_TEST_POSTGRES=skip`` (the switch of every PostgreSQL test).
    """
    if os.environ.get("HYPERPRIOR_TEST_POSTGRES", "").lower() == "skip":
        pytest.skip("PostgreSQL tests disabled by HYPERPRIOR_TEST_POSTGRES=skip")
    try:
        server = ThrowawayPostgres()
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    with server:
        yield server
