"""Realistic synthetic touchpoint traffic: a seeded population and its event history.

Each person has an account id, an email, usually a phone, one or two devices and
sometimes a social handle; each touchpoint sees them through the identifiers it really
has (the web shop a device id and, after login, the email; the call centre a phone;
social media a handle), which is what identity resolution has to untangle. Activity is
skewed (a few customers do most of the buying) so value analysis has something to find.
Households of five share a landline, so the shared-identifier guard has work to do.
The same seed always gives the same events, event ids included.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas import CATALOG, Channel, Envelope, Identifiers, Source, new_event

_FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
]
_LAST = [
    "Silva",
    "Okafor",
    "Müller",
    "Kowalski",
    "Nguyen",
    "García",
    "Smith",
    "Rossi",
    "Haddad",
    "Jensen",
    "Tanaka",
    "Dubois",
    "Novak",
    "Ahmed",
    "Larsen",
    "Moreau",
]
_CATEGORIES = {
    "shoes": ["running-shoe", "sneaker", "boot", "kids-sneaker"],
    "apparel": ["t-shirt", "hoodie", "jacket", "socks"],
    "outdoor": ["tent", "backpack", "bottle", "headlamp"],
}
_PAGES = ["home", "category", "product", "cart", "checkout", "account", "help"]
_CURRENCIES = ["EUR", "EUR", "EUR", "USD", "GBP"]


@dataclass(frozen=True)
class Person:
    index: int
    account_id: str
    email: str
    phone: str | None
    devices: tuple[str, ...]
    social_handle: str | None
    first_name: str
    last_name: str
    currency: str
    activity: float  # relative propensity to interact and buy (heavy-tailed)


class SyntheticTouchpoints:
    """A seeded population and a generator of its touchpoint events."""

    def __init__(
        self,
        *,
        customers: int = 1_000,
        seed: int = 42,
        start: datetime | None = None,
        days: int = 365,
    ) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._span = timedelta(days=days)
        self._ids = random.Random(seed ^ 0x5EED)
        self.people = [self._person(i) for i in range(customers)]

    def _person(self, i: int) -> Person:
        rng = self._rng
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        return Person(
            index=i,
            account_id=f"ACC-{i:07d}",
            email=f"{first}.{last}.{i}@example.com".lower().replace("é", "e").replace("ü", "u"),
            phone=self._phone(i, rng),
            devices=tuple(f"dev-{i}-{d}" for d in range(rng.choice([1, 1, 2]))),
            social_handle=f"@{first.lower()}{i}" if rng.random() < 0.25 else None,
            first_name=first,
            last_name=last,
            currency=rng.choice(_CURRENCIES),
            activity=rng.paretovariate(1.3),
        )

    @staticmethod
    def _phone(i: int, rng: random.Random) -> str | None:
        """Most people have their own phone; one in ten lives in a household of five
        sharing a landline (which identity resolution must not use to merge them)."""
        if i % 50 < 5:
            return f"+1415{9_000_000 + i // 50:07d}"
        return f"+1415{2_000_000 + i % 7_000_000:07d}" if rng.random() < 0.8 else None

    def _event_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._ids.getrandbits(128), version=4)

    def _when(self) -> datetime:
        offset = self._rng.random() * self._span.total_seconds()
        return self._start + timedelta(seconds=int(offset))

    def _make(
        self, type_: str, via: Channel, system: str, ids: Identifiers, when: datetime, **fields: Any
    ) -> Envelope:
        payload = CATALOG[type_].payload(**fields)
        return new_event(
            payload,
            source=Source(system=system, channel=via),
            identifiers=ids,
            occurred_at=when,
            event_id=self._event_id(),
            recorded_at=when + timedelta(seconds=1),
        )

    def events(self, count: int) -> Iterator[Envelope]:
        """Yield ``count`` events: registrations first, then a weighted touchpoint mix."""
        cumulative = list(itertools.accumulate(p.activity for p in self.people))
        for person in self.people[:count]:
            yield self._registered(person)
        for _ in range(max(0, count - len(self.people))):
            person = self._rng.choices(self.people, cum_weights=cumulative)[0]
            yield self._touch(person)

    def _registered(self, p: Person) -> Envelope:
        ids = Identifiers(account_id=p.account_id, email=p.email, phone=p.phone)
        return self._make(
            "customer.registered",
            Channel.WEB,
            "webshop",
            ids,
            self._start - timedelta(days=self._rng.randint(1, 900)),
            first_name=p.first_name,
            last_name=p.last_name,
        )

    def _touch(self, p: Person) -> Envelope:
        rng, when = self._rng, self._when()
        kind = rng.choices(
            [
                "page",
                "search",
                "order",
                "return",
                "email",
                "call",
                "ticket",
                "chat",
                "social",
                "visit",
                "survey",
                "consent",
            ],
            [40, 8, 12, 2, 20, 4, 2, 3, 2, 2, 2, 3],
        )[0]
        device = rng.choice(p.devices)
        logged_in = rng.random() < 0.4
        web_ids = Identifiers(device_id=device, email=p.email if logged_in else None)
        if kind == "page":
            return self._make(
                "web.page_viewed",
                Channel.WEB,
                "webshop",
                web_ids,
                when,
                url=f"https://shop.example.com/{rng.choice(_PAGES)}",
                session_id=f"s-{device}-{when.date()}",
                duration_ms=rng.randint(500, 120_000),
            )
        if kind == "search":
            return self._make(
                "web.searched",
                Channel.WEB,
                "webshop",
                web_ids,
                when,
                query=rng.choice(list(_CATEGORIES)),
                results_count=rng.randint(0, 80),
            )
        if kind in ("order", "return"):
            ids = Identifiers(account_id=p.account_id, email=p.email)
            category = rng.choice(list(_CATEGORIES))
            lines: list[dict[str, Any]] = [
                {
                    "sku": f"{category[:3].upper()}-{rng.randint(1, 400):04d}",
                    "category": category,
                    "name": rng.choice(_CATEGORIES[category]),
                    "quantity": rng.randint(1, 3),
                    "unit_price": Decimal(rng.randint(500, 20_000)) / 100,
                }
                for _ in range(rng.randint(1, 4))
            ]
            total = sum((line["unit_price"] * line["quantity"] for line in lines), Decimal(0))
            order_id = f"O-{p.index}-{rng.randint(1, 10**6)}"
            channel = rng.choice([Channel.ECOMMERCE, Channel.ECOMMERCE, Channel.STORE])
            if kind == "order":
                return self._make(
                    "order.placed",
                    channel,
                    "orders",
                    ids,
                    when,
                    order_id=order_id,
                    lines=lines,
                    currency=p.currency,
                    total=total,
                )
            return self._make(
                "order.returned",
                channel,
                "orders",
                ids,
                when,
                order_id=order_id,
                return_id=f"R-{order_id}",
                lines=lines[:1],
                currency=p.currency,
                refund_amount=lines[0]["unit_price"] * lines[0]["quantity"],
                reason=rng.choice(["size", "damaged", "changed-mind"]),
            )
        if kind == "email":
            step = rng.choices(
                [
                    "message.sent",
                    "message.delivered",
                    "message.opened",
                    "message.clicked",
                    "message.bounced",
                    "message.unsubscribed",
                ],
                [30, 28, 14, 5, 2, 1],
            )[0]
            extra: dict[str, Any] = {}
            if step == "message.clicked":
                extra["url"] = "https://shop.example.com/offer"
            if step == "message.bounced":
                extra["bounce_type"] = rng.choice(["hard", "soft"])
            return self._make(
                step,
                Channel.EMAIL,
                "esp",
                Identifiers(email=p.email),
                when,
                message_id=f"m-{self._event_id().hex[:12]}",
                campaign_id=f"newsletter-{when.month:02d}",
                **extra,
            )
        if kind == "call":
            ids = Identifiers(phone=p.phone) if p.phone else Identifiers(account_id=p.account_id)
            return self._make(
                "call.logged",
                Channel.CALL_CENTRE,
                "callcentre",
                ids,
                when,
                call_id=f"c-{self._event_id().hex[:12]}",
                direction=rng.choice(["inbound", "inbound", "outbound"]),
                duration_seconds=rng.randint(20, 1800),
                reason=rng.choice(["delivery", "billing", "product", "return"]),
            )
        if kind == "ticket":
            return self._make(
                "ticket.opened",
                Channel.WEB,
                "helpdesk",
                Identifiers(email=p.email),
                when,
                ticket_id=f"t-{self._event_id().hex[:10]}",
                subject=rng.choice(["Where is my order?", "Refund", "Broken item"]),
                priority=rng.choice(["low", "normal", "normal", "high"]),
            )
        if kind == "chat":
            return self._make(
                "chat.conversation_held",
                Channel.CHAT,
                "chat",
                web_ids,
                when,
                conversation_id=f"ch-{self._event_id().hex[:10]}",
                started_at=when,
                ended_at=when + timedelta(minutes=rng.randint(1, 30)),
                message_count=rng.randint(2, 40),
                topic="sizing",
            )
        if kind == "social" and p.social_handle:
            return self._make(
                "social.mentioned",
                Channel.SOCIAL,
                "social-listening",
                Identifiers(social_handle=p.social_handle),
                when,
                platform=rng.choice(["instagram", "x", "tiktok"]),
                post_id=f"p-{self._event_id().hex[:12]}",
                sentiment=round(rng.uniform(-1, 1), 2),
            )
        if kind == "visit":
            return self._make(
                "sales.visit_logged",
                Channel.SALES_FORCE,
                "salesforce",
                Identifiers(account_id=p.account_id),
                when,
                visit_id=f"v-{self._event_id().hex[:10]}",
                rep_id=f"rep-{rng.randint(1, 20)}",
                outcome="follow-up",
            )
        if kind == "survey":
            return self._make(
                "survey.answered",
                Channel.SURVEY,
                "surveys",
                Identifiers(email=p.email),
                when,
                survey_id="nps-2026",
                response_id=f"r-{self._event_id().hex[:10]}",
                nps=rng.randint(0, 10),
            )
        return self._make(
            "consent.changed",
            Channel.WEB,
            "preference-centre",
            Identifiers(email=p.email),
            when,
            channel=Channel.EMAIL,
            purpose="marketing",
            granted=rng.random() < 0.7,
        )
