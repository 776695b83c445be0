"""CloudEvents 1.0 structured mode to envelopes: attributes, extensions, ids, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from producers.gateway.cloudevents import mapping_table, parse_cloudevent
from producers.gateway.event_ids import INGEST_NAMESPACE, cloudevent_event_id
from schemas import CATALOG, EventValidationError

RECORDED_AT = datetime(2026, 3, 14, 10, 22, tzinfo=UTC)
ORDER = {
    "order_id": "O-42-1",
    "currency": "EUR",
    "total": "129.90",
    "lines": [{"sku": "SHO-0042", "quantity": 1, "unit_price": "129.90"}],
}


def cloudevent(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "O-42-1",
        "source": "shop-eu",
        "type": "order.placed",
        "time": "2026-03-14T10:21:07Z",
        "crmchannel": "ecommerce",
        "crmidentifiers": {"account_id": "ACC-0000042", "email": "Ana.Silva@Example.com"},
        "data": ORDER,
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def errors_of(data: Any) -> dict[str, str]:
    with pytest.raises(EventValidationError) as caught:
        parse_cloudevent(data, RECORDED_AT)
    return {e.loc: e.msg for e in caught.value.errors}


def test_every_attribute_and_extension_maps_onto_the_envelope() -> None:
    correlation, causation = uuid.uuid4(), uuid.uuid4()
    event = parse_cloudevent(
        cloudevent(
            type="com.loopcrm.order.placed",
            datacontenttype="application/json; charset=utf-8",
            crmschemaversion=1,
            crmcorrelationid=str(correlation),
            crmcausationid=str(causation),
            dataschema="urn:loopcrm:event:order.placed:v1",
            crmsomethingelse="ignored",
        ),
        RECORDED_AT,
    )
    assert event.type == "order.placed"
    assert event.schema_version == CATALOG["order.placed"].version
    assert event.event_id == uuid.uuid5(INGEST_NAMESPACE, "shop-eu\nO-42-1")
    assert event.occurred_at == datetime(2026, 3, 14, 10, 21, 7, tzinfo=UTC)
    assert event.recorded_at == RECORDED_AT
    assert (event.source.system, event.source.channel) == ("shop-eu", "ecommerce")
    assert event.identifiers is not None
    assert event.identifiers.present() == [
        ("account_id", "ACC-0000042"),
        ("email", "ana.silva@example.com"),
    ]
    assert (event.correlation_id, event.causation_id) == (correlation, causation)
    assert orjson.loads(event.payload.model_dump_json())["order_id"] == "O-42-1"


def test_round_trip_back_to_a_cloudevent_gives_the_same_envelope() -> None:
    first = parse_cloudevent(cloudevent(crmcorrelationid=str(uuid.uuid4())), RECORDED_AT)
    wire = orjson.loads(first.model_dump_json())
    again = parse_cloudevent(
        {
            "specversion": "1.0",
            "id": "O-42-1",
            "source": wire["source"]["system"],
            "type": "com.loopcrm." + wire["type"],
            "time": wire["occurred_at"],
            "crmchannel": wire["source"]["channel"],
            "crmidentifiers": orjson.dumps(wire["identifiers"]).decode(),  # the string form
            "crmschemaversion": str(wire["schema_version"]),
            "crmcorrelationid": wire["correlation_id"],
            "data": wire["payload"],
        },
        RECORDED_AT,
    )
    assert again == first


def test_event_id_is_deterministic_per_source_and_id() -> None:
    a = parse_cloudevent(cloudevent(), RECORDED_AT)
    retried = parse_cloudevent(cloudevent(time="2026-03-14T10:21:08Z"), datetime.now(UTC))
    other_id = parse_cloudevent(cloudevent(id="O-42-2"), RECORDED_AT)
    other_source = parse_cloudevent(cloudevent(source="shop-us"), RECORDED_AT)
    assert a.event_id == retried.event_id == cloudevent_event_id("shop-eu", "O-42-1")
    assert len({a.event_id, other_id.event_id, other_source.event_id}) == 3


def test_subject_names_the_customer_when_there_is_no_crmidentifiers() -> None:
    event = parse_cloudevent(
        cloudevent(crmidentifiers=None, subject="email:Ana@Example.com"), RECORDED_AT
    )
    assert event.identifiers is not None
    assert event.identifiers.present() == [("email", "ana@example.com")]
    preferred = parse_cloudevent(cloudevent(subject="email:other@example.com"), RECORDED_AT)
    assert preferred.identifiers is not None and preferred.identifiers.email != "other@example.com"


def test_old_schema_versions_are_upcast() -> None:
    event = parse_cloudevent(
        cloudevent(
            type="customer.registered",
            crmchannel="web",
            crmschemaversion=1,
            data={"full_name": "Ana Silva"},
        ),
        RECORDED_AT,
    )
    assert event.schema_version == CATALOG["customer.registered"].version
    payload = orjson.loads(event.payload.model_dump_json())
    assert (payload["first_name"], payload["last_name"]) == ("Ana", "Silva")


def test_cloudevents_attributes_are_checked_and_named() -> None:
    errors = errors_of(
        cloudevent(
            specversion="0.3",
            id="",
            time=None,
            crmchannel=None,
            datacontenttype="application/xml",
            data_base64="AAAA",
        )
    )
    assert set(errors) == {
        "specversion",
        "id",
        "time",
        "crmchannel",
        "datacontenttype",
        "data_base64",
    }
    assert errors_of(cloudevent(specversion=None))["specversion"] == "Field required"
    assert "source" in errors_of(cloudevent(source=None))
    assert "kind" in errors_of(cloudevent(crmidentifiers=None, subject="ACC-42"))["subject"]
    assert "crmidentifiers" in errors_of(cloudevent(crmidentifiers="{not json"))
    assert errors_of([cloudevent()]) == {"": "A CloudEvent should be a JSON object"}


def test_contract_errors_are_reported_with_cloudevents_names() -> None:
    bad_line = {**ORDER, "lines": [{"sku": "SHO-0042", "quantity": 0, "unit_price": "1"}]}
    errors = errors_of(
        cloudevent(
            data=bad_line,
            time="yesterday",
            crmchannel="carrier-pigeon",
            crmidentifiers={"email": "nope"},
            crmcorrelationid="not-a-uuid",
            source="s" * 101,
        )
    )
    assert set(errors) == {
        "data.lines.0.quantity",
        "time",
        "crmchannel",
        "crmidentifiers.email",
        "crmcorrelationid",
        "source",
    }
    assert "greater than 0" in errors["data.lines.0.quantity"]
    assert "at least one of" in errors_of(cloudevent(crmidentifiers=None))["crmidentifiers"]
    assert "data" in errors_of(cloudevent(data=None))
    assert "crmschemaversion" in errors_of(cloudevent(crmschemaversion="one"))
    unknown = errors_of(cloudevent(type="com.loopcrm.order.teleported"))
    assert "unknown event type 'order.teleported'" in unknown["type"]


def test_the_mapping_is_documented_as_a_table() -> None:
    table = mapping_table()
    for attribute in ("specversion", "crmchannel", "crmidentifiers", "subject", "time", "data"):
        assert f"``{attribute}``" in table
