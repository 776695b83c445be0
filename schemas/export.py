"""JSON Schema of the contract, for producers that are not written in Python."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, Final

from schemas.catalog import CATALOG
from schemas.envelope import Envelope

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def schema_id(event_type: str, version: int) -> str:
    return f"urn:loopcrm:event:{event_type}:v{version}"


def schema_file_name(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}.schema.json"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema (draft 2020-12) of every event type's envelope, keyed by type."""
    return copy.deepcopy(_json_schemas())


def envelope_json_schema() -> dict[str, Any]:
    """The generic envelope schema: any known type, payload left open."""
    return copy.deepcopy(_envelope_json_schema())


@cache
def _json_schemas() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for name, entry in CATALOG.items():
        schema = entry.model.model_json_schema()
        schemas[name] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": schema_id(name, entry.version),
            **schema,
            "title": f"{name} v{entry.version} ({entry.model.__name__})",
            "description": entry.description,
            "x-event-type": name,
            "x-schema-version": entry.version,
            "x-customer-event": entry.customer_event,
        }
    return schemas


@cache
def _envelope_json_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    schema["properties"]["type"]["enum"] = sorted(CATALOG)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "urn:loopcrm:event:envelope",
        **schema,
        "title": "LoopCRM event envelope",
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one schema file per type, ``envelope.schema.json`` and ``index.json``.

    Output is deterministic (sorted keys), so the files can be committed and diffed.
    Returns the written paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: dict[str, dict[str, Any]] = {}
    for name, schema in _json_schemas().items():
        entry = CATALOG[name]
        file_name = schema_file_name(name, entry.version)
        written.append(_write_json(directory / file_name, schema))
        index[name] = {
            "version": entry.version,
            "file": file_name,
            "customer_event": entry.customer_event,
            "description": entry.description,
        }
    written.append(_write_json(directory / "envelope.schema.json", _envelope_json_schema()))
    written.append(_write_json(directory / "index.json", index))
    return written


def _write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(
        json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path
