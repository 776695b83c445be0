"""JSON Schema export and PII marking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import CATALOG, EventValidationError, export_json_schemas, json_schemas, pii_fields

IDENTIFIER_PII = [
    "identifiers.email",
    "identifiers.phone",
    "identifiers.device_id",
    "identifiers.social_handle",
]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    found: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return found


def schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The property schema at a ``pii_fields`` path (``*`` steps into list items)."""
    node = schema
    for step in path.split("."):
        node = resolve(schema, node)
        if step == "*":
            node = node["items"]
            continue
        prop = node["properties"][step]
        inner = [o for o in prop.get("anyOf", []) if "$ref" in o or o.get("type") == "array"]
        node = {**prop, **inner[0]} if inner and step != path.rsplit(".", 1)[-1] else prop
    return node


def test_one_schema_per_type_with_a_const_type() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(CATALOG)
    for name, schema in schemas.items():
        entry = CATALOG[name]
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:loopcrm:event:{name}:v{entry.version}"
        assert name in schema["title"]
        assert schema["description"] == entry.description
        assert schema["properties"]["type"]["const"] == name
        assert schema["properties"]["schema_version"]["const"] == entry.version
        assert schema["additionalProperties"] is False
        assert ("identifiers" in schema["required"]) is entry.customer_event


def test_json_schemas_returns_a_copy() -> None:
    json_schemas()["order.placed"]["title"] = "mutated"
    assert json_schemas()["order.placed"]["title"] != "mutated"


def test_pii_fields_of_a_registration() -> None:
    assert pii_fields("customer.registered") == [
        *IDENTIFIER_PII,
        "payload.first_name",
        "payload.last_name",
        "payload.birth_date",
        "payload.gender",
        "payload.address",
    ]
    assert pii_fields("order.placed") == IDENTIFIER_PII
    assert pii_fields("segment.defined") == IDENTIFIER_PII


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("web.searched", "payload.query"),
        ("call.logged", "payload.notes"),
        ("chat.conversation_held", "payload.transcript"),
        ("social.mentioned", "payload.text"),
        ("sales.visit_logged", "payload.notes"),
        ("sales.note_added", "payload.text"),
        ("survey.answered", "payload.answers.*.answer"),
        ("identity.merged", "payload.linking_identifiers.*.value"),
        ("ticket.opened", "payload.subject"),
    ],
)
def test_free_text_is_pii(event_type: str, path: str) -> None:
    assert path in pii_fields(event_type)


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_every_pii_field_is_marked_in_the_json_schema(event_type: str) -> None:
    schema = json_schemas()[event_type]
    paths = pii_fields(event_type)
    assert paths[:4] == IDENTIFIER_PII
    for path in paths:
        assert schema_at(schema, path).get("x-pii") is True, path
    assert "x-pii" not in schema["properties"]["source"]


def test_pii_fields_of_unknown_type() -> None:
    with pytest.raises(EventValidationError, match="unknown event type"):
        pii_fields("nope.nope")


def test_export_writes_one_file_per_type_plus_envelope_and_index(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    written = export_json_schemas(out)
    assert len(written) == len(CATALOG) + 2
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert (out / "customer.registered.v2.schema.json").is_file()
    index = json.loads((out / "index.json").read_text())
    assert set(index) == set(CATALOG)
    assert index["segment.defined"] == {
        "version": 1,
        "file": "segment.defined.v1.schema.json",
        "customer_event": False,
        "description": "A segment (or a new version of it) was defined by a rule.",
    }
    for name, meta in index.items():
        assert json.loads((out / meta["file"]).read_text()) == json_schemas()[name]
    envelope = json.loads((out / "envelope.schema.json").read_text())
    assert envelope["properties"]["type"]["enum"] == sorted(CATALOG)
    assert envelope["properties"]["payload"]["type"] == "object"
    before = {p.name: p.read_bytes() for p in written}
    export_json_schemas(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "output is deterministic"
