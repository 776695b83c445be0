"""Locate the PostgreSQL server binaries and run them as a non-root user."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from crm.devservices.errors import DevServiceError

INSTALL_HINT = "install the PostgreSQL server, e.g. `apt-get install postgresql`"
SERVICE_USER = "postgres"
"""The OS user that runs initdb/pg_ctl when we are root (they refuse to run as root)."""


def _major(bindir: Path) -> int:
    try:
        return int(bindir.parent.name.split(".")[0])
    except ValueError:
        return -1


def find_pg_bindir(prefer_major: str | None = None) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Order: ``$CRM_PG_BINDIR``; ``/usr/lib/postgresql/<prefer_major>/bin`` (the version
    an existing data dir was made with); the newest ``/usr/lib/postgresql/*/bin``;
    ``pg_config --bindir``; the directory of ``initdb`` on ``PATH``. Raises
    DevServiceError saying what to install if none has the three programs.
    """
    candidates: list[Path] = []
    if env := os.environ.get("CRM_PG_BINDIR"):
        candidates.append(Path(env))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    if prefer_major is not None:
        candidates += [d for d in debian if d.parent.name == prefer_major]
    candidates += debian
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise DevServiceError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


@cache
def server_version(bindir: Path) -> str:
    """The server's version, e.g. ``"15.18"``, from ``postgres --version``."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30
    )
    match = re.search(r"\)\s+(\d+(?:\.\d+)*)", out.stdout)
    return match.group(1) if match else out.stdout.strip()


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_user() -> pwd.struct_passwd:
    """The ``postgres`` OS user's passwd entry (only needed when running as root)."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise DevServiceError(
            "initdb/pg_ctl refuse to run as root and there is no `postgres` OS user to run "
            f"them as: {INSTALL_HINT} (it creates the user), or run as a normal user"
        ) from None


def as_service_user(command: list[str]) -> list[str]:
    """``command`` prefixed with ``runuser -u postgres --`` when we are root."""
    if not running_as_root():
        return command
    service_user()
    runuser = shutil.which("runuser")
    if runuser is None:
        raise DevServiceError("running as root needs `runuser` (util-linux) to drop to postgres")
    return [runuser, "-u", SERVICE_USER, "--", *command]


def give_to_service_user(path: Path) -> None:
    """chown ``path`` to the postgres user when we are root (no-op otherwise)."""
    if running_as_root():
        user = service_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def clean_env() -> dict[str, str]:
    """This process's environment without ``PG*`` variables (they would redirect tools)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
