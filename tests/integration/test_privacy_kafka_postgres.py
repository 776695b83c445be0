"""Privacy on real Kafka and PostgreSQL, from the shell: personal data never reaches the
topic in plain, consent is enforced at launch, a subject access export holds exactly
the person's events, and an erasure survives a full replay with campaign totals intact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from crm.cli import app
from crm.devservices.testing import TestServices
from crm.settings import Settings
from events.kafka import KafkaEventLog
from producers.synthetic import SyntheticTouchpoints
from projections.sql import create_engine_for
from projections.tables import customer_campaigns, customer_segments, customers, metadata

pytestmark = pytest.mark.integration
runner = CliRunner()

NOW = datetime.now(UTC).replace(microsecond=0)
ANA = {
    "email": "Anastasia.Quixotic@Example.com",
    "email_normalised": "anastasia.quixotic@example.com",
    "phone": "+1 415 555 0177",
    "phone_e164": "+14155550177",
    "first_name": "Anastasia",
    "last_name": "Quixotic",
    "street": "Rua Augusta 1717",
}
ANA_SECRETS = [
    ANA["email_normalised"],
    ANA["phone_e164"],
    "4155550177",
    ANA["first_name"],
    ANA["last_name"],
    ANA["street"],
]


def _at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def _event(
    type_: str, version: int, days_ago: float, source: str, ids: dict[str, str], **payload: Any
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "schema_version": version,
        "occurred_at": _at(days_ago),
        "source": {"system": "test-touchpoints", "channel": source},
        "identifiers": ids,
        "payload": payload,
    }


def _order(ids: dict[str, str], order_id: str, total: str, days_ago: float) -> dict[str, Any]:
    line = {"sku": "SKU-1", "quantity": 1, "unit_price": total}
    return _event(
        "order.placed", 1, days_ago, "ecommerce", ids,
        order_id=order_id, lines=[line], currency="EUR", total=total,
    )  # fmt: skip


def _people() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Ana (every kind of personal data, over three identifiers), Bob, Carol (withdrew)."""
    ana = [
        _event(
            "customer.registered", 2, 30, "web",
            {"email": ANA["email"], "phone": ANA["phone"]},
            first_name=ANA["first_name"], last_name=ANA["last_name"], birth_date="1988-04-02",
            address={"line1": ANA["street"], "city": "Lisboa", "country": "PT"},
        ),
        _order({"email": ANA["email_normalised"], "account_id": "ACC-ANA"}, "O-ANA-1", "40.00", 20),
        _event(
            "ticket.opened", 1, 10, "call_centre", {"phone": ANA["phone_e164"]},
            ticket_id="T-ANA", subject=f"{ANA['first_name']} {ANA['last_name']} cannot log in",
        ),
        _event(
            "chat.conversation_held", 1, 9, "chat", {"account_id": "ACC-ANA"},
            conversation_id="CH-ANA", started_at=_at(9), ended_at=_at(8.99), message_count=4,
            transcript=f"Hi, I am {ANA['first_name']} from Lisbon",
        ),
    ]  # fmt: skip
    bob = [
        _event("customer.registered", 2, 30, "web", {"email": "bob.b@example.com"},
               first_name="Bob"),
        _order({"email": "bob.b@example.com"}, "O-BOB-1", "25.00", 19),
    ]  # fmt: skip
    carol = [
        _event("customer.registered", 2, 30, "web", {"email": "carol.c@example.com"},
               first_name="Carol"),
        _order({"email": "carol.c@example.com"}, "O-CAROL-1", "15.00", 18),
        _event("consent.changed", 1, 5, "web", {"email": "carol.c@example.com"},
               channel="email", purpose="marketing", granted=False),
    ]  # fmt: skip
    return ana, bob, carol


@pytest.fixture
def env(
    services: TestServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    name = uuid.uuid4().hex[:8]
    values = {
        "CRM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "CRM_DATABASE_URL": services.database_url,
        "CRM_TOPIC": f"privacy-{name}",
        "CRM_DEADLETTER_TOPIC": f"privacy-{name}-dlq",
        "CRM_PROJECTION_SCHEMA": f"privacy_{name}",
        "CRM_PRIVACY_SCHEMA": f"privacy_{name}_keys",
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_PARTITIONS": "3",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    yield values
    engine = create_engine_for(services.database_url, tmp_path / "unused.sqlite3")
    with engine.begin() as conn:
        for (schema,) in conn.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
            {"p": f"privacy_{name}%"},
        ):
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _crm(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _topic_bytes(settings: Settings) -> bytes:
    log = KafkaEventLog(settings.kafka_bootstrap or "", settings.topic)
    try:
        return b"\n".join(record.value for record in log.read()).lower()
    finally:
        log.close()


def _projection_text(settings: Settings) -> str:
    """Every row of every projection table, as text (lower case)."""
    engine = create_engine_for(settings.database_url, Path("unused"))
    mapped = engine.execution_options(schema_translate_map={None: settings.projection_schema})
    parts = []
    with mapped.connect() as conn:
        for table in metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
    engine.dispose()
    return "\n".join(parts).lower()


def _results(campaign: str) -> dict[str, Any]:
    data = json.loads(_crm("campaigns", "results", campaign, "--json"))
    return {"groups": data["groups"], "audience": data["campaign"]["audience_size"]}


def test_personal_data_is_sealed_consent_enforced_and_erasure_survives_a_replay(
    env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings()
    ana, bob, carol = _people()
    crowd = SyntheticTouchpoints(customers=150, seed=5, start=NOW - timedelta(days=200), days=190)
    lines = [*ana, *bob, *carol]
    lines += [orjson.loads(e.model_dump_json()) for e in crowd.events(3_000)]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    _crm("log", "append", str(source))

    # 1. nothing personal of Ana in the topic, in any form
    topic = _topic_bytes(settings)
    assert b"o-ana-1" in topic  # her events are there
    for secret in ANA_SECRETS:
        assert secret.lower().encode() not in topic, secret

    # 2. one person across email, phone and account id, found by a typed identifier
    export = json.loads(_crm("privacy", "export", f"email:{ANA['email'].upper()}"))
    ana_id = export["customer_id"]
    assert {e["event_id"] for e in export["events"]} >= {e["event_id"] for e in ana}
    touchpoint_ids = {e["event_id"] for e in export["events"] if e["source"]["channel"] != "system"}
    assert touchpoint_ids == {e["event_id"] for e in ana}  # nothing of anyone else
    assert export["profile"]["first_name"] == ANA["first_name"]
    assert {(i["kind"], i["value"]) for i in export["identifiers"]} >= {
        ("email", ANA["email_normalised"]),
        ("phone", ANA["phone_e164"]),
        ("account_id", "ACC-ANA"),
    }
    subjects = {e["payload"].get("subject") for e in export["events"]}
    assert f"{ANA['first_name']} {ANA['last_name']} cannot log in" in subjects
    bob_export = json.loads(_crm("privacy", "export", "email:bob.b@example.com"))
    bob_text = json.dumps(bob_export).lower()
    assert all(secret.lower() not in bob_text for secret in ANA_SECRETS)
    assert {e["event_id"] for e in bob} <= {e["event_id"] for e in bob_export["events"]}

    # 3. consent: Carol withdrew email marketing before the launch
    rule = json.dumps({"field": "order_count", "op": "ge", "value": 1})
    _crm("segments", "define", "buyers", "--rule", rule)
    launch = ["campaigns", "launch", "winback", "--segment", "buyers", "--channel", "email"]
    launched = runner.invoke(app, launch).output
    carol_id = json.loads(_crm("privacy", "export", "email:carol.c@example.com"))["customer_id"]
    engine = create_engine_for(settings.database_url, Path("unused"))
    live = engine.execution_options(schema_translate_map={None: settings.projection_schema})
    targeted = _targeted(live, "winback")
    assert ana_id in targeted and carol_id not in targeted
    assert "left out without email marketing consent" in " ".join(launched.split())

    # responses and a conversion, so the campaign has totals worth keeping
    follow_up = [
        _event("message.sent", 1, 0.5, "email", {"email": ANA["email_normalised"]},
               message_id="m-ana", campaign_id="winback"),
        _event("message.opened", 1, 0.4, "email", {"email": ANA["email_normalised"]},
               message_id="m-ana", campaign_id="winback"),
        _order({"email": ANA["email_normalised"]}, "O-ANA-2", "60.00", 0.3),
        _event("message.sent", 1, 0.5, "email", {"email": "bob.b@example.com"},
               message_id="m-bob", campaign_id="winback"),
    ]  # fmt: skip
    more = tmp_path / "responses.jsonl"
    more.write_bytes(b"\n".join(orjson.dumps(line) for line in follow_up) + b"\n")
    _crm("log", "append", str(more))
    _crm("segments", "list")  # brings the projections up to date
    before = _results("winback")

    # 4. erase Ana; then rebuild everything from the log
    result = runner.invoke(
        app, ["privacy", "erase", f"phone:{ANA['phone']}", "--yes", "--reason", "art. 17"]
    )
    assert result.exit_code == 0, result.output
    assert f"erased {ana_id}" in " ".join(result.output.split())
    after_export = json.loads(_crm("privacy", "export", ana_id))
    assert after_export["erased_at"] is not None
    assert all(secret.lower() not in json.dumps(after_export).lower() for secret in ANA_SECRETS)
    _crm("replay")

    text = _projection_text(settings)
    assert ana_id in text and "o-ana-2" in text  # her orders still count
    for secret in ANA_SECRETS:
        assert secret.lower() not in text, secret
    assert "bob" in text  # others keep theirs
    topic = _topic_bytes(settings)
    assert b"customer.erased" in topic
    for secret in ANA_SECRETS:
        assert secret.lower().encode() not in topic, secret
    assert _results("winback") == before
    with live.connect() as conn:
        row = conn.execute(
            sa.select(
                customers.c.erased_at, customers.c.order_count, customers.c.display_name
            ).where(customers.c.customer_id == ana_id)
        ).one()
        assert row.erased_at is not None and row.order_count == 2 and row.display_name is None
        members = conn.execute(
            sa.select(customer_segments.c.member).where(customer_segments.c.customer_id == ana_id)
        ).scalars()
        assert not any(members)

    # 5. a later campaign never targets her
    _crm("campaigns", "launch", "second", "--segment", "buyers", "--channel", "email")
    second = _targeted(live, "second")
    engine.dispose()
    assert second and ana_id not in second and carol_id not in second


def _targeted(engine: sa.Engine, campaign_id: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(customer_campaigns.c.customer_id).where(
                    customer_campaigns.c.campaign_id == campaign_id,
                    customer_campaigns.c.target_group.is_not(None),
                )
            ).scalars()
        )
