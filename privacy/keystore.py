"""Where the keys live: the ``KeyStore`` port and its SQL adapter.

Two kinds of secrets:

* the **identifier hash key** (one, forever): the HMAC key of ``privacy.crypto``'s
  keyed hashes. Rotating it would split every customer, so it is created once and kept.
* **data keys**, one per *subject* (the identifier set of an event, such as
  ``email:h1:...|phone:h1:...``): each seals the personal data of the events naming
  exactly those identifiers. Erasing a customer destroys the keys of its events, which
  makes their personal data unrecoverable in the log, every backup of it and any copy
  a consumer kept.

``SqlKeyStore`` keeps both in PostgreSQL (schema ``privacy``, beside the projections
but never rebuilt by a replay) or an SQLite file, each wrapped (AES-256-GCM) by a
*master key* that is not stored with them (``CRM_MASTER_KEY`` or a key file): a copy
of the database alone opens nothing. A KMS-backed store would implement the same
four methods. Keys are cached in memory for ``cache_ttl_s`` seconds.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from sqlalchemy.engine import Connection, Engine

from privacy.crypto import KEY_BYTES, b64, decrypt, encrypt, new_key
from projections.sql import chunks, create_schema, insert_ignore, is_postgres


class KeyStoreError(RuntimeError):
    """The key store cannot serve keys (e.g. a wrong master key)."""


HASH_KEY_NAME: Final = "identifier-hash-key"
DEFAULT_CACHE_TTL_S: Final = 60.0
_CACHE_MAX: Final = 200_000


class KeyStore(Protocol):
    """The keys of personal data; a KMS can implement it."""

    def identifier_hash_key(self) -> bytes:
        """The secret of the keyed identifier hashes (created on first use)."""
        ...

    def subject_keys(self, subjects: Collection[str]) -> dict[str, tuple[str, bytes]]:
        """``subject -> (kid, key)``: each subject's data key, created if it has none."""
        ...

    def keys(self, kids: Collection[str]) -> dict[str, bytes]:
        """Data keys by id; destroyed (or unknown) ones are absent."""
        ...

    def destroy(self, kids: Collection[str]) -> int:
        """Destroy the data keys ``kids``; returns how many existed. A later request for
        the same subject gets a new key."""
        ...


metadata = sa.MetaData()
secrets_table = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
)
data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("subject", sa.Text, nullable=False, unique=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def load_master_key(configured: str | None, key_file: Path) -> bytes:
    """The master key: ``configured`` (base64url of 32 bytes), else ``key_file``,
    created with mode 0600 on first use (fine for one machine; set ``CRM_MASTER_KEY``
    from a secret manager when services run on several)."""
    if configured:
        return decode_master_key(configured)
    if key_file.exists():
        return decode_master_key(key_file.read_text())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(b64(key) + "\n")
    return key


def decode_master_key(text: str) -> bytes:
    """32 bytes from their base64url text (``python -c "import secrets, base64;
    print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"``)."""
    text = text.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise ValueError("the master key is not base64url text") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the master key must be {KEY_BYTES} bytes (base64url), not {len(key)}")
    return key


class SqlKeyStore:
    """Keys in PostgreSQL (schema ``privacy``) or SQLite, wrapped by a master key."""

    def __init__(
        self,
        engine: Engine,
        master_key: bytes,
        *,
        schema: str | None = "privacy",
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
    ) -> None:
        self.schema = schema if is_postgres(engine) else None
        self.engine = engine.execution_options(schema_translate_map={None: self.schema})
        self._master = master_key
        self._ttl = cache_ttl_s
        self._lock = threading.Lock()
        self._by_subject: dict[str, tuple[str, bytes, float]] = {}
        self._by_kid: dict[str, tuple[bytes, float]] = {}
        self._hash_key: bytes | None = None
        with self.engine.begin() as conn:
            create_schema(conn, self.schema)
            metadata.create_all(conn)

    # -- wrapping ---------------------------------------------------------------------

    def _wrap(self, name: str, key: bytes) -> bytes:
        return encrypt(self._master, key, name.encode())

    def _unwrap(self, name: str, wrapped: bytes) -> bytes:
        try:
            return decrypt(self._master, bytes(wrapped), name.encode())
        except InvalidTag:
            raise KeyStoreError(
                "the key store's keys were wrapped with another master key: give every "
                "LoopCRM process the same CRM_MASTER_KEY (or master.key file)"
            ) from None

    # -- the port ---------------------------------------------------------------------

    def identifier_hash_key(self) -> bytes:
        if self._hash_key is None:
            with self.engine.begin() as conn:
                row = {"name": HASH_KEY_NAME, "wrapped": self._wrap(HASH_KEY_NAME, new_key())}
                insert_ignore(conn, secrets_table, [row], ["name"])
                wrapped = conn.execute(
                    sa.select(secrets_table.c.wrapped).where(secrets_table.c.name == HASH_KEY_NAME)
                ).scalar_one()
            self._hash_key = self._unwrap(HASH_KEY_NAME, wrapped)
        return self._hash_key

    def subject_keys(self, subjects: Collection[str]) -> dict[str, tuple[str, bytes]]:
        now = time.monotonic()
        found: dict[str, tuple[str, bytes]] = {}
        with self._lock:
            for subject in subjects:
                cached = self._by_subject.get(subject)
                if cached is not None and now - cached[2] < self._ttl:
                    found[subject] = (cached[0], cached[1])
        missing = sorted(set(subjects) - found.keys())
        if missing:
            found.update(self._load_or_create(missing))
        return found

    def _load_or_create(self, subjects: list[str]) -> dict[str, tuple[str, bytes]]:
        """Stored keys are read; keys are made and written only for subjects with none
        (a cold cache after a restart meets mostly known subjects)."""
        created_at = datetime.now(UTC)
        result: dict[str, tuple[str, bytes]] = {}
        with self.engine.begin() as conn:
            for chunk in chunks(subjects, 1_000):
                stored = self._stored(conn, chunk)
                new = [subject for subject in chunk if subject not in stored]
                if new:
                    rows = []
                    for subject in new:
                        kid = b64(os.urandom(16))
                        rows.append(
                            {
                                "kid": kid,
                                "subject": subject,
                                "wrapped": self._wrap(kid, new_key()),
                                "created_at": created_at,
                            }
                        )
                    insert_ignore(conn, data_keys, rows, ["subject"])
                    stored.update(self._stored(conn, new))  # ours, or a concurrent writer's
                result.update(stored)
        now = time.monotonic()
        with self._lock:
            self._trim()
            for subject, (kid, key) in result.items():
                self._by_subject[subject] = (kid, key, now)
                self._by_kid[kid] = (key, now)
        return result

    def _stored(self, conn: Connection, subjects: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """{subject: (kid, key)} of the subjects that have a key."""
        return {
            subject: (kid, self._unwrap(kid, wrapped))
            for kid, subject, wrapped in conn.execute(
                sa.select(data_keys.c.kid, data_keys.c.subject, data_keys.c.wrapped).where(
                    data_keys.c.subject.in_(subjects)
                )
            )
        }

    def keys(self, kids: Collection[str]) -> dict[str, bytes]:
        now = time.monotonic()
        found: dict[str, bytes] = {}
        with self._lock:
            for kid in kids:
                cached = self._by_kid.get(kid)
                if cached is not None and now - cached[1] < self._ttl:
                    found[kid] = cached[0]
        missing = sorted(set(kids) - found.keys())
        if missing:
            loaded: dict[str, bytes] = {}
            with self.engine.connect() as conn:
                for chunk in chunks(missing, 1_000):
                    for kid, wrapped in conn.execute(
                        sa.select(data_keys.c.kid, data_keys.c.wrapped).where(
                            data_keys.c.kid.in_(chunk)
                        )
                    ):
                        loaded[kid] = self._unwrap(kid, wrapped)
            with self._lock:
                self._trim()
                for kid, key in loaded.items():
                    self._by_kid[kid] = (key, now)
            found.update(loaded)
        return found

    def destroy(self, kids: Collection[str]) -> int:
        wanted = sorted(set(kids))
        destroyed = 0
        with self.engine.begin() as conn:
            for chunk in chunks(wanted, 1_000):
                destroyed += len(
                    conn.execute(
                        sa.delete(data_keys)
                        .where(data_keys.c.kid.in_(chunk))
                        .returning(data_keys.c.kid)
                    ).all()
                )
        with self._lock:
            gone = set(wanted)
            for kid in gone:
                self._by_kid.pop(kid, None)
            for subject in [s for s, cached in self._by_subject.items() if cached[0] in gone]:
                del self._by_subject[subject]
        return destroyed

    def _trim(self) -> None:
        if len(self._by_kid) > _CACHE_MAX or len(self._by_subject) > _CACHE_MAX:
            self._by_kid.clear()
            self._by_subject.clear()
