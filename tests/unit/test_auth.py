"""API keys on SQLite: format, create/verify/revoke, scopes, cache, no secret leaks, CLI."""

from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import auth.store
from auth import AuthError, Scope, SqlApiKeyStore, UnknownKeyError, parse_key
from crm.cli import app
from projections.sql import create_engine_for

KEY_FORMAT = re.compile(r"crm_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqlApiKeyStore:
    return SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"), clock=clock)


def test_created_key_has_the_documented_format_and_only_its_hash_is_stored(
    store: SqlApiKeyStore, tmp_path: Path
) -> None:
    key_id, plaintext = store.create("shop-eu", [Scope.INGEST])
    assert KEY_FORMAT.fullmatch(plaintext)
    parsed = parse_key(plaintext)
    assert parsed is not None and parsed.key_id == key_id
    engine = create_engine_for(None, tmp_path / "auth.sqlite3")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().one()
    assert parsed.secret not in str(dict(row))
    assert row["secret_hash"] == auth.keys.hash_secret(parsed.secret)


def test_verify_returns_the_principal_for_a_key_with_the_scope(store: SqlApiKeyStore) -> None:
    key_id, plaintext = store.create("shop-eu", ["ingest", "read"])
    principal = store.verify(plaintext, Scope.READ)
    assert principal.key_id == key_id
    assert principal.name == "shop-eu"
    assert principal.scopes == {Scope.INGEST, Scope.READ}


def test_missing_scope_is_403_and_admin_implies_every_scope(store: SqlApiKeyStore) -> None:
    _, reader = store.create("dashboard", [Scope.READ])
    with pytest.raises(AuthError) as caught:
        store.verify(reader, Scope.INGEST)
    assert caught.value.status == 403
    assert "ingest" in caught.value.message
    _, admin = store.create("ops", [Scope.ADMIN])
    for scope in Scope:
        assert store.verify(admin, scope).key_id


@pytest.mark.parametrize(
    "presented",
    ["", "Bearer", "crm_", "crm_0123456789ab_short", "sk_live_" + "x" * 43, "crm_ZZZ_" + "a" * 43],
)
def test_malformed_keys_are_401(store: SqlApiKeyStore, presented: str) -> None:
    with pytest.raises(AuthError) as caught:
        store.verify(presented, Scope.INGEST)
    assert caught.value.status == 401


def test_wrong_secret_and_unknown_id_are_the_same_401(store: SqlApiKeyStore) -> None:
    _, plaintext = store.create("shop", [Scope.INGEST])
    wrong_secret = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    unknown_id = f"crm_{'0' * 12}_{plaintext.split('_', 2)[2]}"
    messages = []
    for presented in (wrong_secret, unknown_id):
        with pytest.raises(AuthError) as caught:
            store.verify(presented, Scope.INGEST)
        assert caught.value.status == 401
        messages.append(caught.value.message)
    assert messages[0] == messages[1] == "invalid API key"


def test_unknown_key_id_still_compares_in_constant_time(
    store: SqlApiKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown id costs a hash and a compare_digest too, so timing tells ids apart no
    better than secrets."""
    calls: list[tuple[str, str]] = []
    compare = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    _, plaintext = store.create("shop", [Scope.INGEST])
    store.verify(plaintext, Scope.INGEST)
    with pytest.raises(AuthError):
        store.verify(f"crm_{'f' * 12}_{'a' * 43}", Scope.INGEST)
    assert len(calls) == 2
    assert all(len(a) == len(b) == 64 for a, b in calls)


def test_revoked_key_is_refused_at_once_in_this_process(store: SqlApiKeyStore) -> None:
    key_id, plaintext = store.create("shop", [Scope.INGEST])
    store.verify(plaintext, Scope.INGEST)  # now cached
    assert store.revoke(key_id) is True
    assert store.revoke(key_id) is False
    with pytest.raises(AuthError) as caught:
        store.verify(plaintext, Scope.INGEST)
    assert caught.value.status == 401
    assert "revoked" in caught.value.message
    with pytest.raises(UnknownKeyError):
        store.revoke("000000000000")


def test_revocation_elsewhere_takes_effect_within_the_cache_ttl(
    store: SqlApiKeyStore, tmp_path: Path, clock: Clock
) -> None:
    key_id, plaintext = store.create("shop", [Scope.INGEST])
    store.verify(plaintext, Scope.INGEST)
    other_process = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
    other_process.revoke(key_id)
    clock.now += auth.DEFAULT_CACHE_TTL_S - 0.5
    assert store.verify(plaintext, Scope.INGEST).key_id == key_id  # still cached
    clock.now += 1.0
    with pytest.raises(AuthError, match="revoked"):
        store.verify(plaintext, Scope.INGEST)


def test_cache_hits_skip_the_database_and_last_used_is_recorded(
    store: SqlApiKeyStore, clock: Clock
) -> None:
    _, plaintext = store.create("shop", [Scope.INGEST])
    assert store.list()[0].last_used_at is None
    store.verify(plaintext, Scope.INGEST)
    first_use = store.list()[0].last_used_at
    assert first_use is not None and first_use.tzinfo is not None
    store._engine.dispose()
    store._engine = sa.create_engine("sqlite:///nonexistent/dir/auth.sqlite3")
    for _ in range(100):  # would fail if it touched the database
        store.verify(plaintext, Scope.INGEST)


def test_verify_cached_answers_from_memory_only(store: SqlApiKeyStore, clock: Clock) -> None:
    """What the services' event loops call before going to the database in a thread."""
    key_id, reader = store.create("staff-tool", [Scope.READ])
    assert store.verify_cached(reader, Scope.READ) is None  # never verified: needs the DB
    store.verify(reader, Scope.READ)
    cached = store.verify_cached(reader, Scope.READ)
    assert cached is not None and cached.key_id == key_id
    with pytest.raises(AuthError) as refused:
        store.verify_cached(reader, Scope.ADMIN)
    assert refused.value.status == 403
    clock.now += auth.store.DEFAULT_CACHE_TTL_S + 1
    assert store.verify_cached(reader, Scope.READ) is None  # expired: verify again
    store.verify(reader, Scope.READ)
    store.revoke(key_id)
    assert store.verify_cached(reader, Scope.READ) is None  # revoked here: at once


def test_list_shows_no_secret_and_reprs_hide_it(
    store: SqlApiKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    new = store.create("shop", [Scope.INGEST, Scope.ADMIN])
    secret = new.plaintext.split("_", 2)[2]
    store.verify(new.plaintext, Scope.INGEST)
    (info,) = store.list()
    assert info.key_id == new.key_id
    assert info.scopes == (Scope.ADMIN, Scope.INGEST)
    assert info.active
    texts = [
        repr(new),
        str(new.__repr__()),
        repr(info),
        repr(parse_key(new.plaintext)),
        repr(store),
    ]
    texts += [record.getMessage() for record in caplog.records]
    assert not any(secret in text for text in texts)


def test_create_refuses_unknown_scopes_and_empty_names(store: SqlApiKeyStore) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        store.create("shop", ["write"])
    with pytest.raises(ValueError, match="at least one scope"):
        store.create("shop", [])
    with pytest.raises(ValueError, match="name"):
        store.create("  ", [Scope.READ])


def test_cli_creates_lists_and_revokes_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--name", "shop-eu", "--scope", "ingest", "--scope", "read"]
    )
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    assert KEY_FORMAT.fullmatch(plaintext), "stdout must hold the key only"
    key_id = plaintext[4:16]

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.stdout and "ingest, read" in listed.stdout
    assert plaintext[17:] not in listed.output

    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    store = SqlApiKeyStore(create_engine_for(None, tmp_path / "data" / "auth.sqlite3"))
    with pytest.raises(AuthError, match="revoked"):
        store.verify(plaintext, Scope.INGEST)
    assert runner.invoke(app, ["keys", "revoke", "000000000000"]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "write"])
    assert bad.exit_code != 0
