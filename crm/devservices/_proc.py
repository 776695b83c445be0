"""Small process, port and file helpers shared by the local services (Linux only)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` and it can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_answers(port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to 127.0.0.1:``port`` is accepted within ``timeout``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with NULs turned into spaces ("" if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pids_mentioning(needle: str) -> list[int]:
    """Live processes (other than this one) whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and needle in cmdline(pid) and pid_alive(pid):
            found.append(pid)
    return found


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``'s process group if ``pid`` leads one, else to ``pid``.

    A process that is already gone is not an error.
    """
    with contextlib.suppress(ProcessLookupError):
        try:
            leads_group = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        if leads_group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child; otherwise do nothing."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to end (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while True:
        reap(pid)
        if not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``'s group, wait up to ``timeout`` s, then SIGKILL it and wait again."""
    signal_group(pid, signal.SIGTERM)
    if wait_for_exit(pid, timeout):
        return
    signal_group(pid, signal.SIGKILL)
    wait_for_exit(pid, 10)


def log_tail(path: Path, lines: int = 40, since_marker: str | None = None) -> str:
    """The last ``lines`` lines of ``path`` (after the last ``since_marker`` line, if any)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    if since_marker is not None and since_marker in text:
        text = text[text.rfind(since_marker) :]
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path``; ``{}`` if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, then rename)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files hold no secrets
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
