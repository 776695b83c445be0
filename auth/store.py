"""Where API keys live: the ``ApiKeyStore`` port and its SQL adapter.

``SqlApiKeyStore`` keeps one table, ``api_keys``, in PostgreSQL (schema ``auth``) or an
SQLite file (embedded mode). Verification results are cached in memory for
``cache_ttl_s`` seconds (default 5): a key revoked in another process (``crm keys
revoke``) stops working within that time; in the revoking process, at once. The cache is
keyed by a SHA-256 of the presented key, never the key itself, and ``last_used_at`` is
written at most once per key per TTL, so the hot path of a busy producer reads no
database at all.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from auth.keys import (
    ApiKeyInfo,
    AuthError,
    NewApiKey,
    Principal,
    Scope,
    UnknownKeyError,
    generate_key,
    hash_secret,
    parse_key,
    parse_scopes,
)
from projections.sql import create_schema

DEFAULT_CACHE_TTL_S: Final = 5.0
_CACHE_MAX_ENTRIES: Final = 10_000
_INVALID = "invalid API key"
# Compared against when the key id is unknown, so that path costs the same as a wrong secret.
_DUMMY_HASH: Final = hash_secret("no key has this secret")


class ApiKeyStore(Protocol):
    """Create, list, revoke and verify API keys."""

    def create(self, name: str, scopes: Iterable[Scope | str]) -> NewApiKey:
        """Store a new key; the returned plaintext is the only copy there will ever be."""
        ...

    def list(self) -> builtins.list[ApiKeyInfo]: ...

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; ``False`` if it already was. Raise ``UnknownKeyError`` if absent."""
        ...

    def verify(self, plaintext: str, required_scope: Scope) -> Principal:
        """The key's principal, or raise ``AuthError`` (401 unknown/revoked, 403 scope)."""
        ...

    def verify_cached(self, plaintext: str, required_scope: Scope) -> Principal | None:
        """``verify`` from memory only (no I/O, for an event loop); None when it would
        need the database."""
        ...


def api_keys_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "api_keys",
        metadata,
        sa.Column("key_id", sa.String(12), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )


class SqlApiKeyStore:
    """An :class:`ApiKeyStore` in PostgreSQL (``schema``, created if missing) or SQLite."""

    def __init__(
        self,
        engine: Engine,
        schema: str | None = None,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._schema = schema
        self._table = api_keys_table(sa.MetaData(schema=schema))
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._cache_lock = threading.Lock()
        self._create_table()

    def __repr__(self) -> str:
        return f"SqlApiKeyStore({self._engine.url!r}, schema={self._schema!r})"

    def _create_table(self) -> None:
        with self._engine.begin() as conn:
            create_schema(conn, self._schema)
            self._table.create(conn, checkfirst=True)

    # -- management ---------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[Scope | str]) -> NewApiKey:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError("a key needs a name of 1 to 200 characters")
        chosen = parse_scopes(list(scopes))
        if not chosen:
            raise ValueError("a key needs at least one scope")
        key, secret_hash = generate_key()
        with self._engine.begin() as conn:
            conn.execute(
                self._table.insert().values(
                    key_id=key.key_id,
                    name=name,
                    secret_hash=secret_hash,
                    scopes=sorted(scope.value for scope in chosen),
                    created_at=datetime.now(UTC),
                )
            )
        return key

    def list(self) -> builtins.list[ApiKeyInfo]:
        t = self._table
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.created_at, t.c.key_id)).all()
        return [
            ApiKeyInfo(
                key_id=row.key_id,
                name=row.name,
                scopes=tuple(sorted(parse_scopes(row.scopes))),
                created_at=_utc(row.created_at),
                revoked_at=_utc_or_none(row.revoked_at),
                last_used_at=_utc_or_none(row.last_used_at),
            )
            for row in rows
        ]

    def revoke(self, key_id: str) -> bool:
        t = self._table
        with self._engine.begin() as conn:
            revoked_at = conn.execute(
                sa.select(t.c.revoked_at).where(t.c.key_id == key_id)
            ).one_or_none()
            if revoked_at is None:
                raise UnknownKeyError(f"no API key has id {key_id!r}")
            if revoked_at[0] is not None:
                return False
            conn.execute(
                sa.update(t).where(t.c.key_id == key_id).values(revoked_at=datetime.now(UTC))
            )
        with self._cache_lock:
            for digest in [d for d, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[digest]
        return True

    # -- verification -------------------------------------------------------------------

    def verify(self, plaintext: str, required_scope: Scope) -> Principal:
        return _allowed(self._authenticate(plaintext), required_scope)

    def verify_cached(self, plaintext: str, required_scope: Scope) -> Principal | None:
        principal = self._cached(hashlib.sha256(plaintext.encode("utf-8", "replace")).digest())
        return None if principal is None else _allowed(principal, required_scope)

    def _cached(self, digest: bytes) -> Principal | None:
        with self._cache_lock:
            cached = self._cache.get(digest)
        return cached[1] if cached is not None and cached[0] > self._clock() else None

    def _authenticate(self, plaintext: str) -> Principal:
        digest = hashlib.sha256(plaintext.encode("utf-8", "replace")).digest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        now = self._clock()
        principal = self._lookup(plaintext)
        with self._cache_lock:
            if len(self._cache) >= _CACHE_MAX_ENTRIES:
                self._cache = {d: e for d, e in self._cache.items() if e[0] > now}
            if len(self._cache) < _CACHE_MAX_ENTRIES:
                self._cache[digest] = (now + self._ttl, principal)
        return principal

    def _lookup(self, plaintext: str) -> Principal:
        parsed = parse_key(plaintext)
        if parsed is None:
            raise AuthError(401, "malformed API key: expected crm_<key id>_<secret>")
        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.key_id == parsed.key_id)).one_or_none()
        stored = row.secret_hash if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(hash_secret(parsed.secret), stored)
        if row is None or not matches:
            raise AuthError(401, _INVALID)
        if row.revoked_at is not None:
            raise AuthError(401, f"API key {row.key_id} was revoked")
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(t).where(t.c.key_id == row.key_id).values(last_used_at=datetime.now(UTC))
            )
        return Principal(row.key_id, row.name, parse_scopes(row.scopes))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _allowed(principal: Principal, required_scope: Scope) -> Principal:
    if not principal.allows(required_scope):
        raise AuthError(403, f"API key {principal.key_id} lacks the {required_scope} scope")
    return principal
