"""A real PostgreSQL server run from the system's binaries, bound to 127.0.0.1.

State lives under ``home`` (``home/postgres.json`` records the port and data root) and a
*data root* holding ``data/`` (the cluster), ``run/`` (its Unix socket) and
``postgres.log``. The data root is ``home/pg`` normally; as root it is
``/var/tmp/loopcrm-postgres/<name>-<hash of home>`` owned by the ``postgres`` user (who
runs initdb and pg_ctl there), because ``home`` may not be traversable by that user.
``home/pgdata`` then links to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psycopg2
from psycopg2 import sql

from crm.devservices._pg_binaries import (
    as_service_user,
    clean_env,
    find_pg_bindir,
    give_to_service_user,
    running_as_root,
    server_version,
)
from crm.devservices._proc import (
    LOOPBACK,
    cmdline,
    free_port,
    log_tail,
    pid_alive,
    pids_mentioning,
    port_is_free,
    read_json,
    signal_group,
    terminate,
    wait_for_exit,
    write_json,
)
from crm.devservices.errors import DevServiceError

__all__ = ["DEFAULT_SETTINGS", "LocalPostgres"]

ROOT_DATA_BASE = Path("/var/tmp/loopcrm-postgres")
DEFAULT_SETTINGS: Mapping[str, str] = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    # data in RAM or on SSD: with the default 4.0 the planner reads a table of 50k
    # identity nodes in full (6 ms) rather than look up a batch's 300 keys (1.5 ms)
    "random_page_cost": "1.1",
}
"""Server settings for a dev box; ``extra_settings`` override or extend them."""

Progress = Callable[[str], None]

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes incl. "/.s.PGSQL.NNNNN" and a NUL


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _default_data_root(home: Path) -> Path:
    if not running_as_root():
        return home / "pg"
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return ROOT_DATA_BASE / f"{home.name[:40]}-{digest}"


class LocalPostgres:
    """One PostgreSQL cluster on 127.0.0.1 with trust auth for loopback, user ``postgres``.

    ``port`` None reuses the port recorded in ``home/postgres.json`` or picks a free one.
    ``extra_settings`` are written to the server config on every start (fsync stays on
    unless you set ``{"fsync": "off"}``). The server outlives this object; a later
    ``LocalPostgres(home)`` finds it again through ``postmaster.pid``.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        extra_settings: Mapping[str, str] | None = None,
        data_root: Path | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        saved = read_json(self.home / "postgres.json")
        self.port: int = port or saved.get("port") or free_port()
        self.data_root = (
            Path(data_root).expanduser().resolve() if data_root else _default_data_root(self.home)
        )
        self.settings: dict[str, str] = {**DEFAULT_SETTINGS, **(extra_settings or {})}
        for name in self.settings:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"not a PostgreSQL setting name: {name!r}")

    # -- paths and facts --------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (psycopg2 driver, no password)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg2://postgres@{LOOPBACK}:{self.port}/{database}"

    @property
    def version(self) -> str:
        """Server version of the binaries in use, e.g. ``"15.18"``."""
        return server_version(self._bindir())

    @property
    def data_dir(self) -> Path:
        return self.data_root / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the Unix socket goes (a short /tmp path if the data root is too deep)."""
        preferred = self.data_root / "run"
        if len(str(preferred)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.data_root).encode()).hexdigest()[:12]
        return Path("/tmp") / f"loopcrm-pg-{digest}"

    @property
    def log_path(self) -> Path:
        return self.data_root / "postgres.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and str(self.data_dir) in cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        """True if this cluster's postmaster is alive."""
        return self.pid is not None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 60, *, on_progress: Progress | None = None) -> None:
        """Start the server (no-op if running) and return once ``SELECT 1`` answers.

        Runs ``initdb`` the first time (atomically: into a temp dir, then renamed),
        writes ``loopcrm.conf`` (listen address, port, socket dir, settings) and runs
        ``pg_ctl -w start`` detached. Raises DevServiceError with the log's tail on failure.
        ``on_progress`` receives short human-readable step messages.
        """
        say = on_progress or (lambda _msg: None)
        deadline = time.monotonic() + timeout
        if not self.is_running():
            bindir = self._bindir()
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").is_file():
                say("initialising the PostgreSQL cluster…")
                self._initdb(bindir)
            say("starting PostgreSQL…")
            self._write_config()
            if not port_is_free(self.port):
                raise DevServiceError(
                    f"PostgreSQL port {self.port} on {LOOPBACK} is in use by another process "
                    f"(recorded in {self.home / 'postgres.json'}); stop it or pick another port"
                )
            self._pg_ctl_start(bindir, deadline)
        self._wait_until_ready(deadline)

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` does: SIGINT to the postmaster),
        SIGKILL to its process group after ``timeout`` s, then kill any leftover process
        naming the data dir. Idempotent.
        """
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGINT)
            if not wait_for_exit(pid, timeout):
                signal_group(pid, signal.SIGKILL)
                wait_for_exit(pid, 10)
        for leftover in pids_mentioning(f"-D {self.data_dir}"):  # a postmaster we lost track of
            terminate(leftover, 5)

    def destroy(self) -> None:
        """``stop()`` and delete the cluster's data root (and the ``home/pgdata`` link)."""
        self.stop()
        shutil.rmtree(self.data_root, ignore_errors=True)
        if self.socket_dir.parent != self.data_root:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        link = self.home / "pgdata"
        if link.is_symlink():
            link.unlink()

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database names are limited to [A-Za-z_][A-Za-z0-9_]*: {name!r}")
        conn = self._connect("postgres", connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url_for(name)

    # -- internals ------------------------------------------------------------------------

    def _bindir(self) -> Path:
        try:
            major = (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            major = None
        return find_pg_bindir(prefer_major=major)

    def _prepare_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if running_as_root() and self.data_root.parent == ROOT_DATA_BASE:
            ROOT_DATA_BASE.mkdir(mode=0o755, exist_ok=True)
            info = ROOT_DATA_BASE.lstat()  # /var/tmp is world-writable: refuse squatters
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
                raise DevServiceError(f"{ROOT_DATA_BASE} must be a directory owned by root")
        for path in (self.data_root, self.socket_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            give_to_service_user(path)
        link = self.home / "pgdata"
        if not self.data_root.is_relative_to(self.home) and not link.is_symlink():
            link.symlink_to(self.data_root, target_is_directory=True)
        write_json(
            self.home / "postgres.json", {"port": self.port, "data_root": str(self.data_root)}
        )

    def _run(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            as_service_user(command),
            capture_output=True,
            text=True,
            cwd=self.data_root,
            env=clean_env(),
            timeout=timeout,
            start_new_session=True,
        )

    def _initdb(self, bindir: Path) -> None:
        staging = self.data_root / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            str(bindir / "initdb"),
            "--pgdata",
            str(staging),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={_locale()}",
        ]
        result = self._run(command, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise DevServiceError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        with open(staging / "postgresql.conf", "a") as conf:
            conf.write("\n# Added by loopcrm: its settings, rewritten on every start.\n")
            conf.write("include_if_exists = 'loopcrm.conf'\n")
        shutil.rmtree(self.data_dir, ignore_errors=True)  # an uninitialised leftover
        os.rename(staging, self.data_dir)

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        lines = ["# Written by loopcrm's LocalPostgres on every start; edits are lost."]
        lines += [f"{name} = {_quote(value)}" for name, value in settings.items()]
        path = self.data_dir / "loopcrm.conf"
        path.write_text("\n".join(lines) + "\n")
        give_to_service_user(path)

    def _pg_ctl_start(self, bindir: Path, deadline: float) -> None:
        wait = max(5, int(deadline - time.monotonic()))
        command = [
            str(bindir / "pg_ctl"),
            "start",
            "--wait",
            f"--timeout={wait}",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
        ]
        with open(self.log_path, "a"):
            pass
        give_to_service_user(self.log_path)
        result = self._run(command, timeout=wait + 30)
        if result.returncode != 0:
            self.stop(timeout=10)
            raise DevServiceError(
                f"pg_ctl start failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"{self.log_path} ends with:\n{log_tail(self.log_path)}"
            )

    def _connect(self, database: str, connect_timeout: int) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=LOOPBACK,
            port=self.port,
            user="postgres",
            dbname=database,
            connect_timeout=connect_timeout,
        )

    def _wait_until_ready(self, deadline: float) -> None:
        while True:
            try:
                conn = self._connect("postgres", connect_timeout=3)
            except psycopg2.OperationalError as exc:
                error = str(exc).strip()
            else:
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        return
                finally:
                    conn.close()
            if not self.is_running() or time.monotonic() >= deadline:
                raise DevServiceError(
                    f"PostgreSQL did not answer on {LOOPBACK}:{self.port} ({error}); "
                    f"{self.log_path} ends with:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)


def _locale() -> str:
    """``C.UTF-8`` (Unicode-aware ctype, byte-order collation) if installed, else ``C``."""
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "C"
    names = {line.strip().lower().replace("-", "") for line in out.stdout.splitlines()}
    return "C.UTF-8" if "c.utf8" in names else "C"
