"""Running an HTTP app of ``crm`` under uvicorn, in one process or several."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crm.cli_process import LogLevel
from events.gcpause import freeze_heap

if TYPE_CHECKING:
    from fastapi import FastAPI

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
    process import and call ``factory_path`` (``module:function``, returning the same)."""
    import uvicorn

    logging.basicConfig(
        level=log_level.value.upper(), format="%(levelname)s: %(name)s: %(message)s"
    )
    uvicorn.run(
        build() if workers == 1 else factory_path,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_level=log_level.value,
        access_log=access_log,
        proxy_headers=False,
    )


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
