"""Opaque keyset cursors: base64url JSON of the last row's sort key and id, plus what
the page was sorted by, so a cursor cannot be replayed against another ordering."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any


class InvalidCursorError(ValueError):
    """The cursor was not made by this API for this ordering."""


def encode(kind: str, key: Any, row_id: str) -> str:
    value = key.isoformat() if isinstance(key, datetime) else key
    raw = json.dumps([kind, value, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, kind: str, key_type: type) -> tuple[Any, str]:
    """(sort key, id) of ``cursor``; ``InvalidCursorError`` unless made for ``kind``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_kind, value, row_id = json.loads(raw)
        if got_kind != kind or not isinstance(row_id, str):
            raise InvalidCursorError("the cursor belongs to another query or ordering")
        if key_type is datetime:
            stamp = datetime.fromisoformat(value)
            value = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise InvalidCursorError("the cursor is malformed")
        return value, row_id
    except InvalidCursorError:
        raise
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("the cursor is malformed") from exc
