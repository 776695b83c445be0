"""The Python SDK for touchpoint systems: validate where the event is made, publish in batches.

```python
protector = Protector.connect(database_url, master_key)  # the key store; see privacy/
with Publisher.to_kafka("kafka:9092", source_system="shop-eu", protector=protector) as publisher:
    publisher.order_placed(
        identifiers={"email": "ana@example.com"}, occurred_at=now,
        order_id="O-1", lines=[{"sku": "SHO-1", "quantity": 1, "unit_price": "59.90"}],
        currency="EUR", total="59.90",
    )
```

Contract:

* ``publish`` validates at once against the event contract and raises
  ``EventValidationError`` naming the field (``payload.total: ...``); nothing invalid is
  buffered. It returns the event id.
* Events are sent in publish order, in batches of ``batch_size``, or by a background
  thread once the oldest buffered event has waited ``linger`` seconds.
* ``flush`` returns once every buffered event is acknowledged by the target (Kafka
  ``acks=all``, or a 2xx of the gateway), else raises :class:`PublishError`. Events
  that failed for a transient reason stay buffered *with their event ids*, so the next
  ``flush`` (or the background thread) re-sends exactly the same events; consumers
  dedupe on ``event_id``, so a retry never counts twice. Events the target rejected as
  invalid are dropped from the buffer (resending cannot help) and listed in the error.
* ``close`` flushes, stops the thread and closes a target the publisher created; if the
  final flush fails, the unsent events are in ``PublishError.unsent``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

from pydantic import ValidationError

from events.log import EventLog
from schemas import (
    Channel,
    Envelope,
    EventPayload,
    EventValidationError,
    FieldError,
    Identifiers,
    LineItem,
    MessageClicked,
    MessageOpened,
    MessageSent,
    OrderPlaced,
    OrderReturned,
    Source,
    TicketOpened,
    WebPageViewed,
    WebSearched,
    new_event,
)
from schemas.payloads.customer import CustomerRegistered
from schemas.payloads.service import CallDirection, CallLogged

if TYPE_CHECKING:
    from privacy.protect import Protector
    from producers.sdk_http import GatewayTarget

IdentifiersLike = Identifiers | Mapping[str, str] | None
ChannelLike = Channel | str
P = TypeVar("P", bound=EventPayload)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the target refused as invalid; ``index`` is its place in the sent batch."""

    index: int
    event_id: UUID
    errors: tuple[FieldError, ...]

    def __str__(self) -> str:
        return f"event {self.event_id} (index {self.index}): " + "; ".join(map(str, self.errors))


class SendError(Exception):
    """A whole batch was not acknowledged (target down, timeout, refused credentials)."""


class BatchTarget(Protocol):
    """Where a publisher sends batches: an event log, or the HTTP ingest gateway."""

    def send(self, events: Sequence[Envelope]) -> list[Rejection]:
        """Store ``events``; return those refused as invalid, raise ``SendError`` if the batch
        as a whole was not acknowledged (then none of it may be assumed stored)."""
        ...

    def close(self) -> None: ...


class LogTarget:
    """Sends batches with one ``EventLog.append`` each (Kafka: idempotent, ``acks=all``)."""

    def __init__(self, event_log: EventLog) -> None:
        self.event_log = event_log

    def send(self, events: Sequence[Envelope]) -> list[Rejection]:
        try:
            self.event_log.append(events)
        except Exception as exc:  # any failure means "not acknowledged": keep and retry
            raise SendError(f"{type(exc).__name__}: {exc}") from exc
        return []

    def close(self) -> None:
        self.event_log.close()


class PublishError(Exception):
    """Some events were not stored: ``unsent`` are still buffered (retry with ``flush``),
    ``rejections`` were refused by the target as invalid and dropped."""

    def __init__(
        self,
        reason: str,
        *,
        unsent: Sequence[Envelope] = (),
        rejections: Sequence[Rejection] = (),
    ) -> None:
        self.reason = reason
        self.unsent = list(unsent)
        self.rejections = list(rejections)
        lines = [f"{self.failed} event(s) failed: {reason}"]
        if self.unsent:
            lines.append(
                f"{len(self.unsent)} not acknowledged, still buffered "
                "(flush() re-sends them with the same event ids)"
            )
        lines += [f"rejected {rejection}" for rejection in self.rejections[:20]]
        if len(self.rejections) > 20:
            lines.append(f"... and {len(self.rejections) - 20} more rejections")
        super().__init__("\n".join(lines))

    @property
    def failed(self) -> int:
        return len(self.unsent) + len(self.rejections)


class BufferFullError(PublishError):
    """The buffer is full because the target keeps failing; the new event was not buffered."""


@dataclass
class _State:
    buffer: list[Envelope] = field(default_factory=list)
    buffered_at: list[float] = field(default_factory=list)
    """``time.monotonic()`` when each buffered event was published (for ``linger``)."""
    rejections: list[Rejection] = field(default_factory=list)
    last_error: str | None = None
    backoff: float = 0.0
    failed_at: float = 0.0
    closing: bool = False
    closed: bool = False
    acknowledged: int = 0


def _payload(cls: type[P], **fields: Any) -> P:
    """Build a payload, reporting errors as ``payload.<field>`` like the envelope does."""
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        raise EventValidationError.from_pydantic(exc, prefix="payload") from None


class Publisher:
    """Validates, buffers and sends a touchpoint's events; thread-safe; a context manager."""

    def __init__(
        self,
        target: EventLog | BatchTarget,
        *,
        source_system: str,
        batch_size: int = 500,
        linger: float = 0.2,
        max_buffered: int | None = None,
        close_target: bool = False,
    ) -> None:
        if batch_size < 1 or linger < 0:
            raise ValueError("batch_size must be >= 1 and linger >= 0")
        self._target: BatchTarget = LogTarget(target) if isinstance(target, EventLog) else target
        self._sources: dict[str, Source] = {}
        self._source_system = source_system
        self._source(Channel.SYSTEM)  # fail now if the system name is invalid
        self._batch_size = batch_size
        self._linger = linger
        self._max_buffered = max(max_buffered or 20 * batch_size, batch_size)
        self._close_target = close_target
        self._state = _State()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loopcrm-publisher", daemon=True)
        self._thread.start()

    @classmethod
    def to_kafka(
        cls,
        bootstrap: str,
        topic: str = "crm.events",
        *,
        source_system: str,
        protector: Protector | None,
        partitions: int = 6,
        replication_factor: int = 1,
        delivery_timeout_ms: int = 30_000,
        client_id: str = "loopcrm-sdk",
        batch_size: int = 500,
        linger: float = 0.2,
    ) -> Publisher:
        """Publish straight to Kafka (idempotent producer, ``acks=all``).

        ``protector`` seals personal data before it leaves the process (it needs the
        key store: ``Protector.connect``). It has no default on purpose: ``None``
        publishes personal data in plain, which only a topic without personal data (or
        a test) should do; touchpoints without key store access use ``to_gateway``.
        """
        from events.kafka import KafkaEventLog
        from privacy.protect import SealingEventLog

        event_log: EventLog = KafkaEventLog(
            bootstrap,
            topic,
            partitions=partitions,
            replication_factor=replication_factor,
            client_id=client_id,
            delivery_timeout_ms=delivery_timeout_ms,
        )
        if protector is not None:
            event_log = SealingEventLog(event_log, protector)
        return cls(
            event_log,
            source_system=source_system,
            batch_size=batch_size,
            linger=linger,
            close_target=True,
        )

    @classmethod
    def to_gateway(
        cls,
        url: str,
        api_key: str,
        *,
        source_system: str,
        timeout: float = 10.0,
        retry_timeout: float = 30.0,
        batch_size: int = 500,
        linger: float = 0.2,
        **http_options: Any,
    ) -> Publisher:
        """Publish through the HTTP ingest gateway (``POST {url}/v1/events``).

        ``http_options`` go to :class:`producers.sdk_http.GatewayTarget` (e.g. ``transport``).
        """
        from producers.sdk_http import GatewayTarget

        target: GatewayTarget = GatewayTarget(
            url, api_key, timeout=timeout, retry_timeout=retry_timeout, **http_options
        )
        return cls(
            target,
            source_system=source_system,
            batch_size=batch_size,
            linger=linger,
            close_target=True,
        )

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        payload: EventPayload,
        *,
        identifiers: IdentifiersLike,
        channel: ChannelLike,
        occurred_at: datetime,
        event_id: UUID | None = None,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
    ) -> UUID:
        """Validate and buffer one event; return its id (give ``event_id`` to make a
        re-publish of the same fact idempotent)."""
        event = new_event(
            payload,
            source=self._source(channel),
            occurred_at=occurred_at,
            identifiers=_identifiers(identifiers),
            event_id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return self.publish_event(event)

    def publish_event(self, event: Envelope) -> UUID:
        """Buffer an envelope built elsewhere (already validated: envelopes are immutable)."""
        with self._cond:
            self._check_open()
            while len(self._state.buffer) >= self._max_buffered:
                error = self._state.last_error
                if error is not None:
                    raise BufferFullError(
                        f"buffer full ({self._max_buffered} events) and the target fails: {error}",
                        unsent=self._state.buffer,
                    )
                self._cond.wait()
                self._check_open()
            state = self._state
            state.buffer.append(event)
            state.buffered_at.append(time.monotonic())
            if len(state.buffer) == 1 or len(state.buffer) % self._batch_size == 0:
                self._cond.notify_all()
        return event.event_id

    def flush(self) -> None:
        """Send everything buffered and wait for acknowledgement; see the module contract."""
        with self._cond:
            self._check_open()
        self._send(everything=True)
        with self._cond:
            state = self._state
            rejections, state.rejections = state.rejections, []
            if state.buffer or rejections:
                reason = state.last_error if state.buffer else "rejected by the target"
                raise PublishError(
                    reason or "not acknowledged", unsent=state.buffer, rejections=rejections
                )

    def close(self) -> None:
        """Flush, stop the background thread and close a target this publisher opened."""
        with self._cond:
            if self._state.closed or self._state.closing:
                return
        try:
            self.flush()
        finally:
            with self._cond:
                self._state.closing = True
                self._cond.notify_all()
            self._thread.join()
            with self._cond:
                self._state.closed = True
            if self._close_target:
                self._target.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Events waiting to be acknowledged."""
        with self._cond:
            return len(self._state.buffer)

    @property
    def acknowledged(self) -> int:
        """Events the target has acknowledged since this publisher started."""
        with self._cond:
            return self._state.acknowledged

    # -- typed helpers for the common touchpoints ----------------------------------------

    def customer_registered(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        first_name: str,
        last_name: str | None = None,
        channel: ChannelLike = Channel.WEB,
        event_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        """A customer registered; ``fields`` are the other ``CustomerRegistered`` fields."""
        payload = _payload(CustomerRegistered, first_name=first_name, last_name=last_name, **fields)
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def order_placed(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        order_id: str,
        lines: Sequence[LineItem | Mapping[str, Any]],
        currency: str,
        total: Decimal | str | int,
        channel: ChannelLike = Channel.ECOMMERCE,
        event_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        """An order was placed; ``fields``: discount, shipping, tax, store_id."""
        payload = _payload(
            OrderPlaced, order_id=order_id, lines=lines, currency=currency, total=total, **fields
        )
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def order_returned(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        order_id: str,
        return_id: str,
        lines: Sequence[LineItem | Mapping[str, Any]],
        currency: str,
        refund_amount: Decimal | str | int,
        reason: str | None = None,
        channel: ChannelLike = Channel.ECOMMERCE,
        event_id: UUID | None = None,
    ) -> UUID:
        """Items of an order were returned and refunded."""
        payload = _payload(
            OrderReturned,
            order_id=order_id,
            return_id=return_id,
            lines=lines,
            currency=currency,
            refund_amount=refund_amount,
            reason=reason,
        )
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def page_viewed(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        url: str,
        session_id: str | None = None,
        channel: ChannelLike = Channel.WEB,
        event_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        """A web page was viewed; ``fields``: page_type, referrer, duration_ms."""
        payload = _payload(WebPageViewed, url=url, session_id=session_id, **fields)
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def searched(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        query: str,
        results_count: int,
        session_id: str | None = None,
        channel: ChannelLike = Channel.WEB,
        event_id: UUID | None = None,
    ) -> UUID:
        """A visitor searched the web site."""
        payload = _payload(
            WebSearched, query=query, results_count=results_count, session_id=session_id
        )
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def message_sent(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        message_id: str,
        campaign_id: str | None = None,
        channel: ChannelLike = Channel.EMAIL,
        event_id: UUID | None = None,
    ) -> UUID:
        """A message (email by default; SMS, push, direct mail by ``channel``) was sent."""
        payload = _payload(MessageSent, message_id=message_id, campaign_id=campaign_id)
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def email_opened(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        message_id: str,
        campaign_id: str | None = None,
        event_id: UUID | None = None,
    ) -> UUID:
        """A customer opened an email (``message.opened`` on the email channel)."""
        payload = _payload(MessageOpened, message_id=message_id, campaign_id=campaign_id)
        return self._emit(payload, identifiers, Channel.EMAIL, occurred_at, event_id)

    def message_clicked(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        message_id: str,
        url: str,
        campaign_id: str | None = None,
        channel: ChannelLike = Channel.EMAIL,
        event_id: UUID | None = None,
    ) -> UUID:
        """A customer clicked a link in a message."""
        payload = _payload(MessageClicked, message_id=message_id, url=url, campaign_id=campaign_id)
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    def call_logged(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        call_id: str,
        direction: CallDirection | str,
        duration_seconds: int,
        event_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        """A call-centre call; ``fields``: reason, outcome, agent_id, notes."""
        payload = _payload(
            CallLogged,
            call_id=call_id,
            direction=direction,
            duration_seconds=duration_seconds,
            **fields,
        )
        return self._emit(payload, identifiers, Channel.CALL_CENTRE, occurred_at, event_id)

    def ticket_opened(
        self,
        *,
        identifiers: IdentifiersLike,
        occurred_at: datetime,
        ticket_id: str,
        subject: str,
        channel: ChannelLike = Channel.CALL_CENTRE,
        event_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        """A service ticket was opened; ``fields``: category, priority."""
        payload = _payload(TicketOpened, ticket_id=ticket_id, subject=subject, **fields)
        return self._emit(payload, identifiers, channel, occurred_at, event_id)

    # -- internals ----------------------------------------------------------------------

    def _emit(
        self,
        payload: EventPayload,
        identifiers: IdentifiersLike,
        channel: ChannelLike,
        occurred_at: datetime,
        event_id: UUID | None,
    ) -> UUID:
        return self.publish(
            payload,
            identifiers=identifiers,
            channel=channel,
            occurred_at=occurred_at,
            event_id=event_id,
        )

    def _source(self, channel: ChannelLike) -> Source:
        key = str(channel)
        source = self._sources.get(key)
        if source is None:
            try:
                source = Source.model_validate({"system": self._source_system, "channel": key})
            except ValidationError as exc:
                raise EventValidationError.from_pydantic(exc, prefix="source") from None
            self._sources[key] = source
        return source

    def _check_open(self) -> None:
        if self._state.closing or self._state.closed:
            raise RuntimeError("this Publisher is closed")

    def _run(self) -> None:
        """Background sender: full batches at once, a partial one after its linger."""
        while True:
            with self._cond:
                while not self._due():
                    if self._state.closing:
                        return
                    self._cond.wait(self._wait_time())
                if self._state.closing:
                    return
            self._send(everything=False)

    def _due(self) -> bool:
        state = self._state
        if not state.buffer:
            return False
        if state.backoff:
            return time.monotonic() - state.failed_at >= state.backoff
        return (
            len(state.buffer) >= self._batch_size
            or time.monotonic() - state.buffered_at[0] >= self._linger
        )

    def _wait_time(self) -> float | None:
        state = self._state
        if not state.buffer:
            return None
        if state.backoff:
            return max(0.001, state.failed_at + state.backoff - time.monotonic())
        return max(0.001, state.buffered_at[0] + self._linger - time.monotonic())

    def _send(self, *, everything: bool) -> None:
        """Send buffered events in order, batch by batch, stopping at the first failure.

        Only one sender runs at a time (``_send_lock``), so the batch in flight is always
        the buffer's head and nobody else removes it.
        """
        with self._send_lock:
            while True:
                with self._cond:
                    state = self._state
                    batch = state.buffer[: self._batch_size]
                    if not batch or not (
                        everything
                        or len(batch) == self._batch_size
                        or time.monotonic() - state.buffered_at[0] >= self._linger
                    ):
                        return
                try:
                    rejections = self._target.send(batch)
                except Exception as exc:  # SendError, or a target's bug: keep the events
                    reason = str(exc) if isinstance(exc, SendError) else repr(exc)
                    with self._cond:
                        state.last_error = reason
                        state.backoff = min(max(2 * state.backoff, self._linger, 0.05), 5.0)
                        state.failed_at = time.monotonic()
                        self._cond.notify_all()
                    return
                with self._cond:
                    del state.buffer[: len(batch)]
                    del state.buffered_at[: len(batch)]
                    state.rejections += rejections
                    state.acknowledged += len(batch) - len(rejections)
                    state.last_error, state.backoff = None, 0.0
                    self._cond.notify_all()


def _identifiers(identifiers: IdentifiersLike) -> Identifiers | None:
    if identifiers is None or isinstance(identifiers, Identifiers):
        return identifiers
    try:
        return Identifiers.model_validate(dict(identifiers))
    except ValidationError as exc:
        raise EventValidationError.from_pydantic(exc, prefix="identifiers") from None
