"""``crm.serving.frozen_heap_at_startup``: each worker freezes its start-up heap, after the
app's own lifespan has started and without skipping its shutdown."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crm.serving import frozen_heap_at_startup


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_the_app_has_started_and_its_lifespan_still_runs() -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        steps.append(f"started, frozen {gc.get_freeze_count()}")
        yield
        steps.append("stopped")

    app = FastAPI(lifespan=lifespan)
    app.get("/ping")(lambda: {"ok": True})
    app = frozen_heap_at_startup(app)
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        frozen = gc.get_freeze_count()
        assert client.get("/ping").json() == {"ok": True}
    assert steps == ["started, frozen 0", "stopped"]  # frozen after the app's own start-up
    assert frozen > 10_000  # modules, routes and models of this process


def test_startup_handlers_of_an_app_without_a_lifespan_still_run() -> None:
    started: list[bool] = []
    app = FastAPI(on_startup=[lambda: started.append(True)])
    with TestClient(frozen_heap_at_startup(app)):
        assert started == [True]
        assert gc.get_freeze_count() > 0
