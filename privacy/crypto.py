"""Sealing and opening the personal data of events: pure functions over JSON dicts.

An event in the log keeps everything but its personal data in the clear (so the
processor, analysts and other consumers can use it) and carries that data sealed:

* every PII field (``schemas.pii_fields``) is taken out: a personal *identifier*
  (email, phone, device id, social handle) is replaced by its keyed hash
  (``h1:...``, HMAC-SHA-256 of ``kind:normalised value`` under a secret key), which
  identity resolution matches on; a required field gets the placeholder
  ``REDACTED``; an optional one is left out;
* the values taken out go, as one JSON map ``{path: value}``, into the envelope's
  ``pii``: AES-256-GCM under the data key of the event's subject, with the event id
  as associated data (a sealed blob cannot be moved to another event).

Opening puts the values back; without the key (destroyed by an erasure) the event
stays in its sealed form, which is a valid event with no personal data. ``redact``
gives that form for an event whatever its state (sealed, opened or written in plain by
an older producer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache, lru_cache
from typing import Any, Final, NamedTuple, get_args

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas import CATALOG, pii_fields
from schemas.fields import REDACTED
from schemas.identifiers import (
    HASHED_KINDS,
    IDENTIFIER_HASH_PREFIX,
    IDENTIFIER_KINDS,
    is_identifier_hash,
    normalize_identifier,
)

KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_HASH_BYTES: Final = 20  # 160 bits: 27 base64url characters

JsonDict = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM: nonce || ciphertext || tag."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Inverse of ``encrypt``; raises ``cryptography.exceptions.InvalidTag`` if tampered."""
    return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)


class IdentifierHasher:
    """Keyed hashes of personal identifiers: equal people get equal hashes, and without
    the key nobody can tell whose they are (or test a guessed email against them)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the identifier hash key must be at least 16 bytes")
        self._key = key
        # recent identifiers only: an HMAC is ~4 µs, and a cache sized for every customer
        # (it was 200,000, ~50 MiB) made the processor's memory grow with customers
        self.hash = lru_cache(maxsize=16_384)(self._hash)

    def _hash(self, kind: str, value: str) -> str:
        """``value`` as carried in the log: its keyed hash for a personal kind, else itself.

        ``value`` must be normalised (``schemas`` does it when validating); a value that
        is a hash already is returned unchanged.
        """
        if kind not in HASHED_KINDS or is_identifier_hash(value):
            return value
        digest = hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).digest()
        return IDENTIFIER_HASH_PREFIX + b64(digest[:_HASH_BYTES])

    def lookup(self, kind: str, value: str) -> str:
        """Normalise a value typed by a person (``Ana@X.com``) and hash it."""
        return self.hash(kind, normalize_identifier(kind, value))  # type: ignore[arg-type]


# --- paths -----------------------------------------------------------------------------


class _PiiPath(NamedTuple):
    parts: tuple[str, ...]
    dotted: str
    required: bool
    wildcard: bool  # a list in the path (``answers.*.answer``)


@cache
def _paths(event_type: str) -> tuple[_PiiPath, ...]:
    """The type's PII fields; unknown types have none."""
    if event_type not in CATALOG:
        return ()
    model = CATALOG[event_type].model
    result = []
    for dotted in pii_fields(event_type):
        parts = tuple(dotted.split("."))
        result.append(_PiiPath(parts, dotted, _required(model, parts), "*" in parts))
    return tuple(result)


def _required(model: Any, parts: tuple[str, ...]) -> bool:
    current = model
    info = None
    for part in parts:
        if part == "*":
            continue
        info = current.model_fields[part]
        annotation = info.annotation
        current = annotation
        while not hasattr(current, "model_fields"):
            args = [a for a in get_args(current) if a is not type(None)]
            if not args:
                break
            current = args[0]
    return info is not None and info.is_required()


def _places(data: JsonDict, path: _PiiPath) -> Sequence[tuple[str, JsonDict, str]]:
    """(concrete path, container, key) of every value ``path`` names in ``data``."""
    if path.wildcard:
        return tuple(_locate(data, path.parts))
    node: Any = data  # the common case, a few dict lookups
    for part in path.parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    last = path.parts[-1]
    if isinstance(node, dict) and node.get(last) is not None:
        return ((path.dotted, node, last),)
    return ()


def _locate(
    data: Any, parts: tuple[str, ...], prefix: str = ""
) -> Iterator[tuple[str, JsonDict, str]]:
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(data, list):
            for index, item in enumerate(data):
                yield from _locate(item, rest, f"{prefix}{index}.") if rest else ()
        return
    if not isinstance(data, dict) or head not in data or data[head] is None:
        return
    if rest:
        yield from _locate(data[head], rest, f"{prefix}{head}.")
    else:
        yield f"{prefix}{head}", data, head


def _identifier_kind(path: str, container: Mapping[str, Any]) -> str | None:
    """The identifier kind a PII value is of (``identifiers.email``, a linking identifier)."""
    if path.startswith("identifiers."):
        return path.rsplit(".", 1)[1]
    kind = container.get("kind")
    return kind if isinstance(kind, str) else None


def _take_out(
    data: JsonDict, hasher: IdentifierHasher, keep: Callable[[str, Any], bool]
) -> JsonDict:
    """Replace the PII of ``data`` (in place) by hashes/placeholders; return what was taken.

    ``keep(path, value)`` is asked for each value: False drops it from the result
    (redaction), True keeps it for sealing.
    """
    taken: JsonDict = {}
    for pii_path in _paths(str(data.get("type"))):
        for path, container, key in _places(data, pii_path):
            value = container[key]
            kind = _identifier_kind(path, container)
            if kind is not None and kind not in HASHED_KINDS:
                continue  # account ids, customer ids: not personal data in this contract
            if isinstance(value, str) and (is_identifier_hash(value) or value == REDACTED):
                continue  # sealed already
            if kind is not None and isinstance(value, str):
                container[key] = hasher.hash(kind, value)
            elif pii_path.required:
                container[key] = REDACTED
            else:
                del container[key]
            if keep(path, value):
                taken[path] = value
    return taken


def _put_back(data: JsonDict, values: Mapping[str, Any]) -> None:
    for path, value in values.items():
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value


# --- the three operations --------------------------------------------------------------


def seal(data: JsonDict, hasher: IdentifierHasher, kid: str, key: bytes) -> JsonDict:
    """The log form of an event given as a JSON dict (plain, as validated by schemas).

    Returns ``data`` itself (modified) with ``pii`` set, or unchanged if it holds no
    personal data.
    """
    taken = _take_out(data, hasher, lambda path, value: True)
    if taken:
        blob = encrypt(key, orjson.dumps(taken), str(data["event_id"]).encode())
        data["pii"] = {"kid": kid, "ct": b64(blob)}
    return data


def sealed_kid(data: Mapping[str, Any]) -> str | None:
    pii = data.get("pii")
    return pii.get("kid") if isinstance(pii, dict) else None


def open_sealed(data: JsonDict, key: bytes | None) -> JsonDict:
    """Put the sealed values back into ``data`` (in place) and drop ``pii``.

    Without ``key`` (destroyed) or with a blob that does not authenticate, the event
    keeps its sealed form: hashes and placeholders, no personal data.
    """
    pii = data.pop("pii", None)
    if not isinstance(pii, dict) or key is None:
        return data
    try:
        plain = decrypt(key, unb64(str(pii.get("ct", ""))), str(data["event_id"]).encode())
    except Exception:
        return data
    values = orjson.loads(plain)
    if isinstance(values, dict):
        _put_back(data, values)
    return data


def redact(data: JsonDict, hasher: IdentifierHasher) -> JsonDict:
    """The event with no personal data: sealed values dropped, plain ones hashed or removed."""
    data.pop("pii", None)
    _take_out(data, hasher, lambda path, value: False)
    return data


def subject_of(data: Mapping[str, Any], hasher: IdentifierHasher) -> str | None:
    """Whose data key seals an event: the *set* of its identifiers, as nodes
    (``email:h1:...|phone:h1:...``), personal ones hashed.

    Identity resolution puts events with the same identifiers on the same customer, so
    a data key never seals events of two customers: erasing one destroys the keys of
    its own events (found in its timeline) and nobody else's, even when an identifier
    it shares with others (a family phone) comes first.
    """
    identifiers = data.get("identifiers")
    if not isinstance(identifiers, dict):
        return None
    nodes = [
        f"{kind}:{hasher.hash(kind, value)}"
        for kind in IDENTIFIER_KINDS
        if isinstance(value := identifiers.get(kind), str)
    ]
    return "|".join(nodes) or None
