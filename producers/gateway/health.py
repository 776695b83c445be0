"""Readiness: can the gateway store events right now?

A check is a callable that returns when ready and raises ``LogUnavailableError``
(with the reason) when not. ``KafkaProbe`` asks the cluster for its metadata with a
short timeout; ``CachedCheck`` runs a check at most once per ``ttl_s`` (one probe at a
time), so a load balancer polling ``/readyz`` cannot flood the brokers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from events.log import LogUnavailableError

ReadinessCheck = Callable[[], None]


def always_ready() -> None:
    """The embedded log is a local file: ready whenever the process is up."""


class KafkaProbe:
    """Ready when a Kafka broker answers a metadata request within ``timeout_ms``."""

    def __init__(self, bootstrap: str, *, timeout_ms: int = 2_000) -> None:
        self._bootstrap = bootstrap
        self._timeout_ms = timeout_ms

    def __call__(self) -> None:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                client_id="loopcrm-ingest-ready",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        except KafkaError as exc:
            raise LogUnavailableError(f"Kafka at {self._bootstrap} did not answer: {exc}") from exc
        try:
            brokers = admin.describe_cluster().get("brokers")
        except KafkaError as exc:
            raise LogUnavailableError(f"Kafka metadata request failed: {exc}") from exc
        finally:
            admin.close()
        if not brokers:
            raise LogUnavailableError("Kafka answered with no live broker")


class CachedCheck:
    """Run ``check`` at most once per ``ttl_s``; callers in between get its last outcome."""

    def __init__(
        self,
        check: ReadinessCheck,
        *,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._expires = float("-inf")
        self._error: LogUnavailableError | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._clock() >= self._expires:
                try:
                    self._check()
                    self._error = None
                except LogUnavailableError as exc:
                    self._error = exc
                self._expires = self._clock() + self._ttl
            error = self._error
        if error is not None:
            raise LogUnavailableError(str(error))
