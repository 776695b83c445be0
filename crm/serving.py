"""Running an HTTP app of ``crm`` under uvicorn, in one process or several."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crm.cli_process import LogLevel
from events.gcpause import freeze_heap

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

Workers = Annotated[
    int, typer.Option(min=1, max=64, help="processes (one per core is a good start)")
]


def serve(
    build: Callable[[], FastAPI],
    factory_path: str,
    *,
    workers: int,
    host: str,
    port: int,
    log_level: LogLevel,
    access_log: bool = True,
) -> None:
    """Serve ``build()`` in this process, or with ``workers`` > 1 have each uvicorn worker
    process import and call ``factory_path`` (``module:function``, returning the same).

    Several workers each listen on a socket of their own (``SO_REUSEPORT``, see
    ``PortShare``), so the kernel spreads new connections among them.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    logging.basicConfig(
        level=log_level.value.upper(), format="%(levelname)s: %(name)s: %(message)s"
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level.value,
        "access_log": access_log,
        "proxy_headers": False,
    }
    if workers == 1:
        uvicorn.run(build(), **options)
        return
    config = uvicorn.Config(factory_path, factory=True, workers=workers, **options)
    try:
        share = PortShare(host, port, backlog=config.backlog)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with share:
        log.info("%d worker processes listening on %s:%d", workers, host, share.port)
        Multiprocess(config, sockets=[share]).run()  # type: ignore[list-item]


class PortShare:
    """A port that every uvicorn worker process listens on with a socket of its own.

    uvicorn's workers share one listening socket, and whichever worker wakes first
    accepts every connection that is waiting: a client opening 8 keep-alive connections
    at once often had all 8 served by one worker while the other idled (gateway, 40,000
    events in requests of 1,000: 4,463-5,053 ev/s against 8,387-8,876 when split). Here
    each worker binds its own ``SO_REUSEPORT`` socket and the kernel hashes each new
    connection to one of them. uvicorn pickles its sockets into each worker process:
    this object is pickled as a call that makes that worker's socket.

    In this process the port is first bound without ``SO_REUSEPORT``, so a port anything
    listens on (another LoopCRM too) fails at once instead of being shared, and port 0
    picks one for all; then it stays bound with ``SO_REUSEPORT`` but never listened on,
    so no connection is ever queued here.
    """

    def __init__(self, host: str, port: int, *, backlog: int = 2048) -> None:
        self.host = host
        self.backlog = backlog
        with _bound_socket(host, port, reuse_port=False) as probe:
            self.port = int(probe.getsockname()[1])
        self._reserved = _bound_socket(host, self.port, reuse_port=True)

    def __enter__(self) -> PortShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self._reserved.close()

    def __reduce__(
        self,
    ) -> tuple[Callable[[str, int, int], socket.socket], tuple[str, int, int]]:
        return _worker_socket, (self.host, self.port, self.backlog)


def _worker_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = _bound_socket(host, port, reuse_port=True)
    sock.listen(backlog)
    return sock


def _bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def frozen_heap_at_startup(app: FastAPI) -> FastAPI:
    """``events.gcpause.freeze_heap`` once ``app`` has started, in each worker process."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(started: Any) -> AsyncIterator[Any]:
        async with inner(started) as state:
            freeze_heap()
            yield state

    app.router.lifespan_context = lifespan
    return app
