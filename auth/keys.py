"""API keys: their format, scopes, the principal a key stands for, and auth errors.

A key reads ``crm_<key_id>_<secret>``: ``key_id`` is 12 lower-case hex digits (public,
shown by ``crm keys list`` and safe to log), ``secret`` is 32 random bytes as 43
characters of URL-safe base64 (no padding). Only the SHA-256 of the secret is stored.
A slow password hash (bcrypt, argon2) protects *low-entropy* secrets against offline
guessing; a 256-bit random secret cannot be guessed, so one fast hash is enough and keeps
verification cheap on every request. Pure code: no I/O.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, NamedTuple

KEY_PREFIX: Final = "crm_"
_KEY_PATTERN: Final = re.compile(r"crm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Scope(StrEnum):
    """What a key may do. ``admin`` implies every other scope."""

    INGEST = "ingest"
    """publish events (HTTP ingest gateway)"""
    READ = "read"
    """query projections (read API)"""
    ANALYST = "analyst"
    """replays and assessments over history"""
    ADMIN = "admin"
    """everything, including key management"""


class AuthError(Exception):
    """Authentication (``status`` 401) or authorization (403) failed; ``message`` says why.

    The message never contains the presented key.
    """

    def __init__(self, status: int, message: str) -> None:
        if status not in (401, 403):
            raise ValueError(f"AuthError status must be 401 or 403, not {status}")
        super().__init__(message)
        self.status = status
        self.message = message


class UnknownKeyError(LookupError):
    """No API key has this id."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key stands for. Holds no secret."""

    key_id: str
    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A stored key as listed: everything but the secret (not even its hash)."""

    key_id: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class NewApiKey(NamedTuple):
    """``(key_id, plaintext)`` of a key just created; the plaintext is never shown again."""

    key_id: str
    plaintext: str

    def __repr__(self) -> str:
        return f"NewApiKey(key_id={self.key_id!r}, plaintext='***')"


class ParsedKey(NamedTuple):
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedKey(key_id={self.key_id!r}, secret='***')"


def generate_key() -> tuple[NewApiKey, str]:
    """A fresh key and the hash to store for it."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(key_id, f"{KEY_PREFIX}{key_id}_{secret}"), hash_secret(secret)


def parse_key(plaintext: str) -> ParsedKey | None:
    """Split a presented key into id and secret; ``None`` if it is not a LoopCRM key."""
    match = _KEY_PATTERN.fullmatch(plaintext)
    return ParsedKey(match[1], match[2]) if match else None


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret (see the module doc for why no slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(values: object) -> frozenset[Scope]:
    """Scopes from their names; raise ``ValueError`` naming an unknown one."""
    if isinstance(values, str) or not isinstance(values, list | tuple | set | frozenset):
        raise ValueError("scopes must be a list of names")
    try:
        return frozenset(Scope(value) for value in values)
    except ValueError:
        known = ", ".join(scope.value for scope in Scope)
        raise ValueError(f"unknown scope in {sorted(map(str, values))}; known: {known}") from None
