"""CloudEvents 1.0 (structured mode, JSON format) to LoopCRM envelopes.

| CloudEvents attribute | envelope field | notes |
|---|---|---|
| ``specversion`` | — | required, must be ``"1.0"`` |
| ``type`` | ``type`` | ``order.placed`` or reverse-DNS ``com.loopcrm.order.placed`` |
| ``id`` + ``source`` | ``event_id`` | ``uuid5(INGEST_NAMESPACE, source + "\\n" + id)`` |
| ``source`` | ``source.system`` | at most 100 characters |
| ``time`` | ``occurred_at`` | required (optional in CloudEvents, not here) |
| ``data`` | ``payload`` | a JSON object; ``data_base64`` is refused |
| ``datacontenttype`` | — | if present, must be ``application/json`` |
| ``subject`` | ``identifiers`` | ``<kind>:<value>`` (``email:ana@example.com``) |
| ``crmchannel`` | ``source.channel`` | required: ``web``, ``ecommerce``, ``email``, … |
| ``crmidentifiers`` | ``identifiers`` | an object, or that object as a JSON string |
| ``crmschemaversion`` | ``schema_version`` | integer; default: the type's current one |
| ``crmcorrelationid`` | ``correlation_id`` | a UUID |
| ``crmcausationid`` | ``causation_id`` | a UUID |

A retried CloudEvent (same ``source`` and ``id``) gets the same ``event_id``, so
consumers count it once. ``crmidentifiers`` wins over ``subject`` when both are given;
its string form exists because CloudEvents SDKs allow only primitive extension values.
``dataschema`` and any other extension attribute are ignored (not stored, not echoed).
``recorded_at`` is set by the gateway. Validation errors are reported with the
CloudEvents attribute names (``data.lines.0.quantity``, ``time``, ``crmchannel``).
Pure code: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from producers.gateway.event_ids import cloudevent_event_id
from schemas import CATALOG, IDENTIFIER_KINDS, Envelope, EventValidationError, FieldError
from schemas import parse_event as parse_envelope

SPEC_VERSION: Final = "1.0"
TYPE_PREFIX: Final = "com.loopcrm."

_LOC_TO_CLOUDEVENTS: Final = (
    ("event_id", "id"),
    ("schema_version", "crmschemaversion"),
    ("occurred_at", "time"),
    ("source.system", "source"),
    ("source.channel", "crmchannel"),
    ("correlation_id", "crmcorrelationid"),
    ("causation_id", "crmcausationid"),
    ("payload", "data"),
)
_DIGITS = re.compile(r"[0-9]{1,18}")


def parse_cloudevent(data: object, recorded_at: datetime) -> Envelope:
    """Validate one structured-mode CloudEvent and return its envelope.

    Raises ``EventValidationError`` whose ``loc`` values name CloudEvents attributes.
    """
    if not isinstance(data, Mapping):
        raise EventValidationError.single("", "A CloudEvent should be a JSON object", "model_type")
    envelope, identifiers_from = _envelope_fields(data, recorded_at)
    try:
        return parse_envelope(envelope)
    except EventValidationError as exc:
        raise EventValidationError(
            [
                FieldError(_to_cloudevents_loc(e.loc, identifiers_from), e.msg, e.kind)
                for e in exc.errors
            ]
        ) from None


def mapping_table() -> str:
    """The attribute mapping above, as a Markdown table (for the OpenAPI description)."""
    return "\n".join(line for line in (__doc__ or "").splitlines() if line.startswith("|"))


def _envelope_fields(ce: Mapping[str, Any], recorded_at: datetime) -> tuple[dict[str, Any], str]:
    errors: list[FieldError] = []

    def required_string(name: str) -> str:
        value = ce.get(name)
        if value is None:
            errors.append(FieldError(name, "Field required", "missing"))
        elif not isinstance(value, str) or not value:
            errors.append(FieldError(name, "Input should be a non-empty string", "string_type"))
        else:
            return value
        return ""

    if ce.get("specversion") != SPEC_VERSION:
        message = "Field required" if "specversion" not in ce else 'Input should be "1.0"'
        errors.append(FieldError("specversion", message, "specversion"))
    ce_id, source, ce_type = (required_string(name) for name in ("id", "source", "type"))
    if "time" not in ce:
        errors.append(FieldError("time", "Field required", "missing"))
    if "crmchannel" not in ce:
        errors.append(FieldError("crmchannel", "Field required", "missing"))
    content_type = ce.get("datacontenttype")
    if content_type is not None and not _is_json(content_type):
        errors.append(
            FieldError("datacontenttype", "Input should be application/json", "datacontenttype")
        )
    if "data_base64" in ce:
        errors.append(
            FieldError("data_base64", "binary data is not supported; send JSON data", "data")
        )
    identifiers, identifiers_from = _identifiers(ce, errors)
    if errors:
        raise EventValidationError(errors)
    event_type = ce_type.removeprefix(TYPE_PREFIX)
    entry = CATALOG.get(event_type)
    envelope: dict[str, Any] = {
        "event_id": str(cloudevent_event_id(source, ce_id)),
        "type": event_type,
        "schema_version": _schema_version(
            ce.get("crmschemaversion"), entry.version if entry else 1
        ),
        "occurred_at": ce["time"],
        "recorded_at": recorded_at,
        "source": {"system": source, "channel": ce["crmchannel"]},
    }
    if identifiers is not None:
        envelope["identifiers"] = identifiers
    if "data" in ce:
        envelope["payload"] = ce["data"]
    for attribute, field in (
        ("crmcorrelationid", "correlation_id"),
        ("crmcausationid", "causation_id"),
    ):
        if attribute in ce:
            envelope[field] = ce[attribute]
    return envelope, identifiers_from


def _identifiers(ce: Mapping[str, Any], errors: list[FieldError]) -> tuple[Any, str]:
    if "crmidentifiers" in ce:
        value = ce["crmidentifiers"]
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                errors.append(
                    FieldError("crmidentifiers", "Input should be a JSON object", "dict_type")
                )
        return value, "crmidentifiers"
    subject = ce.get("subject")
    if subject is None:
        return None, "crmidentifiers"
    kind, _, value = subject.partition(":") if isinstance(subject, str) else ("", "", "")
    if kind not in IDENTIFIER_KINDS or not value:
        errors.append(
            FieldError(
                "subject",
                f"Input should be <kind>:<value> with kind one of {', '.join(IDENTIFIER_KINDS)}",
                "subject",
            )
        )
        return None, "subject"
    return {kind: value}, "subject"


def _schema_version(value: object, default: int) -> object:
    if value is None:
        return default
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return value


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _to_cloudevents_loc(loc: str, identifiers_from: str) -> str:
    if loc == "identifiers" or loc.startswith("identifiers."):
        return "subject" if identifiers_from == "subject" else "crm" + loc
    for ours, theirs in _LOC_TO_CLOUDEVENTS:
        if loc == ours or loc.startswith(ours + "."):
            return theirs + loc[len(ours) :]
    return loc
