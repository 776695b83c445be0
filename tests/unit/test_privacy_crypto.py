"""Sealing personal data: every catalog type sealed, opened, shredded and redacted; keyed
identifier hashes; tampering; the SQL key store; the sealing event log on SQLite."""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from events.codec import decode_event, encode_event, event_json
from events.sqlite import SqliteEventLog
from privacy.crypto import IdentifierHasher, b64, open_sealed, redact, seal, unb64
from privacy.keystore import KeyStoreError, SqlKeyStore, load_master_key
from privacy.protect import Protector, SealingEventLog
from projections.sql import create_engine_for
from schemas import (
    CATALOG,
    Channel,
    Envelope,
    EventValidationError,
    Identifiers,
    Source,
    new_event,
    parse_event,
    pii_fields,
)
from schemas.fields import REDACTED
from schemas.identifiers import HASHED_KINDS, is_identifier_hash
from tests.unit.test_schemas_catalog import SAMPLE_PAYLOADS

MASTER = bytes(range(32))
OCCURRED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

EMAIL = "zeferina.quintanilha@example.org"
PHONE = "+351912345678"
DEVICE = "device-zq-77810"
HANDLE = "@zeferina_q"
IDS = Identifiers(email=EMAIL, phone=PHONE, device_id=DEVICE, social_handle=HANDLE)

_ADDRESS = {
    "line1": "77 Rua das Flores",
    "line2": "Apartamento 4B",
    "city": "Guimaraes",
    "postal_code": "4800-443",
    "region": "Minho",
    "country": "PT",
}
_PROFILE = {
    "first_name": "Zeferina",
    "last_name": "Quintanilha",
    "birth_date": "1987-03-14",
    "gender": "nonbinary-x",
    "address": _ADDRESS,
}

# The catalog samples, with every personal field filled in (distinctive values).
PII_PAYLOADS: dict[str, dict[str, Any]] = {
    **copy.deepcopy(SAMPLE_PAYLOADS),
    "customer.registered": {**SAMPLE_PAYLOADS["customer.registered"], **_PROFILE},
    "customer.profile_updated": {
        **SAMPLE_PAYLOADS["customer.profile_updated"],
        **_PROFILE,
        "first_name": "Zefa",
        "address": {**_ADDRESS, "line1": "9 Travessa do Carmo"},
    },
    "web.searched": {"query": "maternity jeans size forty", "results_count": 2},
    "call.logged": {
        **SAMPLE_PAYLOADS["call.logged"],
        "notes": "Caller mentioned her divorce and a new address",
    },
    "ticket.opened": {"ticket_id": "t-1", "subject": "Refund to IBAN PT50000201231234567890154"},
    "ticket.resolved": {"ticket_id": "t-1", "resolution": "Refunded to card ending 4242 today"},
    "chat.conversation_held": {
        **SAMPLE_PAYLOADS["chat.conversation_held"],
        "transcript": "I am pregnant and need bigger sizes",
    },
    "social.mentioned": {
        **SAMPLE_PAYLOADS["social.mentioned"],
        "text": "Zeferina loves these runners",
    },
    "sales.visit_logged": {
        **SAMPLE_PAYLOADS["sales.visit_logged"],
        "notes": "Met at her home in Guimaraes",
    },
    "sales.note_added": {"note_id": "n-1", "rep_id": "rep-1", "text": "Husband works at Banco X"},
    "survey.answered": {
        "survey_id": "sv-1",
        "response_id": "resp-1",
        "answers": [
            {"question_id": "q1", "answer": "My diabetes makes shopping hard"},
            {"question_id": "q2", "answer": 4},
            {"question_id": "q3", "answer": True},
            {"question_id": "q4", "answer": 2.5},
        ],
    },
    "identity.merged": {
        "survivor_id": "cust-1",
        "merged_id": "cust-2",
        "linking_identifiers": [
            {"kind": "email", "value": "Linked.Person@Example.org"},
            {"kind": "phone", "value": "+351 912 000 111"},
            {"kind": "device_id", "value": "linked-device-991"},
            {"kind": "social_handle", "value": "@linked_person"},
            {"kind": "account_id", "value": "ACC-LINK-9"},
        ],
        "reason": "same email",
    },
}

_NOT_PERSONAL_KINDS = {"account_id", "customer_id"}


def _event(event_type: str, identifiers: Identifiers | None = IDS, **overrides: Any) -> Envelope:
    entry = CATALOG[event_type]
    payload = entry.payload.model_validate({**PII_PAYLOADS[event_type], **overrides})
    return new_event(
        payload,
        source=Source(system="test", channel=Channel.ECOMMERCE),
        occurred_at=OCCURRED,
        identifiers=identifiers,
    )


def _locate(data: Any, parts: list[str], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(concrete path, value, container) of every place ``parts`` names in ``data``."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from _locate(item, rest, f"{prefix}{i}.")
        return
    if not isinstance(data, dict) or data.get(head) is None:
        return
    if rest:
        yield from _locate(data[head], rest, f"{prefix}{head}.")
    else:
        yield f"{prefix}{head}", data[head], data


def _personal(data: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every personal value of an event dict (identifier kinds not personal left out)."""
    found = []
    for dotted in pii_fields(str(data["type"])):
        for path, value, container in _locate(data, dotted.split(".")):
            kind = path.rsplit(".", 1)[1] if path.startswith("identifiers.") else None
            kind = kind or (container.get("kind") if isinstance(container, dict) else None)
            if kind in _NOT_PERSONAL_KINDS:
                continue
            found.append((path, value, kind))
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _secrets(plain: dict[str, Any]) -> set[str]:
    """The plain personal strings of an event (long enough to search for as bytes)."""
    return {s for _, value, _ in _personal(plain) for s in _strings(value) if len(s) >= 5}


def _assert_no_pii(data: dict[str, Any], secrets: set[str]) -> None:
    """``data`` holds no personal value: only hashes, placeholders or nothing."""
    text = orjson.dumps(data)
    leaked = sorted(s for s in secrets if s.encode() in text)
    assert not leaked, f"plain personal data in {data['type']}: {leaked}"
    for path, value, kind in _personal(data):
        if kind is not None and kind in HASHED_KINDS:
            assert isinstance(value, str) and is_identifier_hash(value), (path, value)
        else:
            assert value == REDACTED, (path, value)


@pytest.fixture
def keystore(tmp_path: Path) -> Iterator[SqlKeyStore]:
    engine = create_engine_for(None, tmp_path / "keys.sqlite3")
    yield SqlKeyStore(engine, MASTER)
    engine.dispose()


@pytest.fixture
def protector(keystore: SqlKeyStore) -> Protector:
    return Protector(keystore)


# --- every catalog type --------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_the_json_sealed_is_the_json_encoded(event_type: str) -> None:
    """Sealing starts from ``event_json``, which must be ``encode_event``'s JSON exactly."""
    event = _event(event_type)
    assert event_json(event) == orjson.loads(encode_event(event))


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_every_type_seals_opens_shreds_and_redacts(event_type: str, protector: Protector) -> None:
    event = _event(event_type)
    plain = event.model_dump(mode="json")
    secrets = _secrets(plain)
    # the sample covers every personal field of the type
    for dotted in pii_fields(event_type):
        assert list(_locate(plain, dotted.split("."))), f"sample lacks {dotted}"
    assert {EMAIL, PHONE, DEVICE, HANDLE} <= secrets
    with pytest.raises(AssertionError):  # the check below does see plain personal data
        _assert_no_pii(plain, secrets)

    [record] = protector.seal([event])
    raw = record.value + (record.key or b"")
    leaked = sorted(s for s in secrets if s.encode() in raw)
    assert not leaked, f"plain personal data in the sealed record: {leaked}"
    sealed = decode_event(record.value)  # the sealed form is a valid event
    assert sealed.pii is not None and sealed.event_id == event.event_id
    assert sealed.type == event.type
    sealed_dict = orjson.loads(record.value)
    _assert_no_pii({k: v for k, v in sealed_dict.items() if k != "pii"}, secrets)
    for kind in HASHED_KINDS:
        plain_value = getattr(IDS, kind)
        assert sealed_dict["identifiers"][kind] == protector.hasher.lookup(kind, plain_value)

    [opened] = protector.open_all([orjson.loads(record.value)])
    assert "pii" not in opened
    assert parse_event(opened) == event

    # the key subject is the set of the event's identifiers, in kind order, hashed
    subject = protector.subject(sealed_dict)
    assert subject == "|".join(
        f"{kind}:{protector.hasher.lookup(kind, getattr(IDS, kind))}"
        for kind in ("email", "phone", "device_id", "social_handle")
    )
    kid = sealed_dict["pii"]["kid"]
    assert protector.keystore.subject_keys([subject])[subject][0] == kid
    assert protector.destroy([kid]) == 1
    assert protector.destroy([kid]) == 0
    assert protector.keystore.keys([kid]) == {}
    [shredded] = protector.open_all([orjson.loads(record.value)])
    assert "pii" not in shredded
    after = parse_event(shredded)
    assert after.event_id == event.event_id and after.pii is None
    _assert_no_pii(after.model_dump(mode="json"), secrets)

    redacted = protector.redact(event.model_dump(mode="json"))
    assert "pii" not in redacted
    _assert_no_pii(parse_event(redacted).model_dump(mode="json"), secrets)
    # the sealed form redacts to the same thing as the plain event
    assert protector.redact(orjson.loads(record.value)) == redacted


def test_linking_account_ids_and_account_subjects_stay_plain(protector: Protector) -> None:
    ids = Identifiers(account_id="ACC-77", email=EMAIL)
    event = _event("identity.merged", ids)
    [record] = protector.seal([event])
    data = orjson.loads(record.value)
    assert data["identifiers"]["account_id"] == "ACC-77"
    assert is_identifier_hash(data["identifiers"]["email"])
    links = {link["kind"]: link["value"] for link in data["payload"]["linking_identifiers"]}
    assert links["account_id"] == "ACC-LINK-9"
    assert all(is_identifier_hash(v) for k, v in links.items() if k != "account_id")
    email_node = f"email:{protector.hasher.lookup('email', EMAIL)}"
    assert protector.subject(data) == f"account_id:ACC-77|{email_node}"
    assert parse_event(protector.open_all([data])[0]) == event
    # an event with only an account id: its subject is that id, in the clear
    only_account = _event("identity.merged", Identifiers(account_id="ACC-77"))
    [record] = protector.seal([only_account])
    data = orjson.loads(record.value)
    assert data["pii"] is not None
    assert protector.subject(data) == "account_id:ACC-77"
    assert parse_event(protector.open_all([data])[0]) == only_account


def test_a_batch_seals_per_subject_and_opens_what_it_still_can(protector: Protector) -> None:
    ana = Identifiers(email="ana.silva@example.com")
    bob = Identifiers(email="bob.bobson@example.com")
    events = [
        _event("ticket.opened", ana, subject="Ana secret subject"),
        _event("ticket.opened", bob, subject="Bob secret subject"),
        _event("sales.note_added", ana, text="Ana secret note"),
    ]
    records = protector.seal(events)
    datas = [orjson.loads(r.value) for r in records]
    kids = [d["pii"]["kid"] for d in datas]
    assert kids[0] == kids[2] != kids[1]
    ana_subject = protector.subject(datas[0])
    assert ana_subject is not None and ana_subject == protector.subject(datas[2])
    assert protector.keystore.subject_keys([ana_subject])[ana_subject][0] == kids[0]
    assert protector.destroy([kids[0]]) == 1
    opened = protector.open_all([orjson.loads(r.value) for r in records])
    assert parse_event(opened[1]) == events[1]
    for data in (opened[0], opened[2]):
        text = orjson.dumps(data)
        assert b"Ana secret" not in text and b"ana.silva" not in text
        parse_event(data)


def test_an_event_without_personal_data_is_left_unsealed(protector: Protector) -> None:
    request = _event("customer.erasure_requested", Identifiers(customer_id="cus_1"))
    definition = _event("segment.defined", None)
    records = protector.seal([request, definition])
    for record, event in zip(records, [request, definition], strict=True):
        data = orjson.loads(record.value)
        assert data.get("pii") is None
        assert parse_event(data) == event


# --- keyed identifier hashes ---------------------------------------------------------


def test_identifier_hashes_are_keyed_and_deterministic() -> None:
    key, other = os.urandom(32), os.urandom(32)
    first, again, foreign = IdentifierHasher(key), IdentifierHasher(key), IdentifierHasher(other)
    token = first.hash("email", "ana@x.com")
    assert token.startswith("h1:") and len(token) == 3 + 27 and is_identifier_hash(token)
    assert first.hash("email", "ana@x.com") == again.hash("email", "ana@x.com") == token
    assert foreign.hash("email", "ana@x.com") != token
    assert first.hash("email", "bob@x.com") != token
    # the kind is part of what is hashed
    assert first.hash("device_id", "same-value") != first.hash("social_handle", "same-value")
    # a hash is hashed no further; non-personal kinds pass through
    assert first.hash("email", token) == token
    assert first.hash("account_id", "ACC-1") == "ACC-1"
    assert first.hash("customer_id", "cus_1") == "cus_1"
    assert first.lookup("account_id", " ACC-1 ") == "ACC-1"
    with pytest.raises(ValueError):
        IdentifierHasher(b"short")


def test_lookup_normalises_what_a_person_types() -> None:
    hasher = IdentifierHasher(os.urandom(32))
    assert hasher.lookup("email", "Ana@X.com") == hasher.lookup("email", " ana@x.com ")
    assert hasher.lookup("email", "Ana@X.com") == hasher.hash("email", "ana@x.com")
    want = hasher.hash("phone", "+14155550123")
    for typed in ["(415) 555-0123", "+1 415 555 0123", "415.555.0123", "+14155550123"]:
        assert hasher.lookup("phone", typed) == want, typed
    assert hasher.lookup("device_id", " dev-1 ") == hasher.hash("device_id", "dev-1")
    for kind, bad in [("email", "not-an-email"), ("phone", "12"), ("device_id", "  ")]:
        with pytest.raises(ValueError):
            hasher.lookup(kind, bad)


def test_identifiers_accept_hash_tokens() -> None:
    hasher = IdentifierHasher(os.urandom(32))
    tokens = {kind: hasher.lookup(kind, getattr(IDS, kind)) for kind in HASHED_KINDS}
    ids = Identifiers(**tokens)
    assert {kind: getattr(ids, kind) for kind in HASHED_KINDS} == tokens
    event = _event("order.placed", ids)
    assert parse_event(event.model_dump(mode="json")).identifiers == ids
    with pytest.raises(EventValidationError):
        parse_event({**event.model_dump(mode="json"), "identifiers": {"email": "h1:short"}})


# --- tampering -----------------------------------------------------------------------


def _sealed(protector: Protector, event: Envelope) -> dict[str, Any]:
    [record] = protector.seal([event])
    data: dict[str, Any] = orjson.loads(record.value)
    return data


def _check_stays_sealed(protector: Protector, data: dict[str, Any], secrets: set[str]) -> None:
    [opened] = protector.open_all([data])
    assert "pii" not in opened
    _assert_no_pii(parse_event(opened).model_dump(mode="json"), secrets)


def test_a_tampered_ciphertext_keeps_the_sealed_form(protector: Protector) -> None:
    event = _event("customer.registered")
    secrets = _secrets(event.model_dump(mode="json"))
    for position in (0, 12, 20, -1):  # nonce, ciphertext, tag
        data = _sealed(protector, event)
        blob = bytearray(unb64(data["pii"]["ct"]))
        blob[position] ^= 0x01
        data["pii"]["ct"] = b64(bytes(blob))
        _check_stays_sealed(protector, data, secrets)
    truncated = _sealed(protector, event)
    truncated["pii"]["ct"] = truncated["pii"]["ct"][:10]
    _check_stays_sealed(protector, truncated, secrets)
    unknown_kid = _sealed(protector, event)
    unknown_kid["pii"]["kid"] = "no-such-kid"
    _check_stays_sealed(protector, unknown_kid, secrets)


def test_a_sealed_blob_cannot_move_to_another_event(protector: Protector) -> None:
    ids = Identifiers(email="ana.silva@example.com")
    mine = _event("ticket.opened", ids, subject="My own ticket subject")
    other = _event("ticket.opened", ids, subject="Someone else's subject")
    a, b = _sealed(protector, mine), _sealed(protector, other)
    assert a["pii"]["kid"] == b["pii"]["kid"]  # same subject, same key
    b["pii"] = a["pii"]
    [opened] = protector.open_all([b])
    assert opened["payload"]["subject"] == REDACTED
    assert b"My own ticket" not in orjson.dumps(opened)
    parse_event(opened)
    # the pure function agrees, with the right key in hand
    key = protector.keystore.keys([a["pii"]["kid"]])[a["pii"]["kid"]]
    moved = {**_sealed(protector, other), "pii": a["pii"]}
    assert open_sealed(moved, key)["payload"]["subject"] == REDACTED


def test_pure_seal_and_open_round_trip() -> None:
    hasher, key = IdentifierHasher(os.urandom(32)), os.urandom(32)
    event = _event("customer.registered")
    data = seal(event.model_dump(mode="json"), hasher, "kid-1", key)
    assert data["pii"]["kid"] == "kid-1"
    assert parse_event(open_sealed(copy.deepcopy(data), key)) == event
    assert "pii" not in open_sealed(copy.deepcopy(data), None)
    assert parse_event(open_sealed(copy.deepcopy(data), os.urandom(32))).pii is None
    assert redact(copy.deepcopy(data), hasher) == redact(event.model_dump(mode="json"), hasher)


# --- the key store -------------------------------------------------------------------


def test_a_wrong_master_key_unwraps_nothing(tmp_path: Path) -> None:
    engine = create_engine_for(None, tmp_path / "keys.sqlite3")
    store = SqlKeyStore(engine, MASTER)
    hash_key = store.identifier_hash_key()
    kid, _ = store.subject_keys(["email:h1:x"])["email:h1:x"]
    intruder = SqlKeyStore(engine, os.urandom(32))
    with pytest.raises(KeyStoreError, match="another master key"):
        intruder.identifier_hash_key()
    with pytest.raises(KeyStoreError):
        intruder.keys([kid])
    with pytest.raises(KeyStoreError):
        intruder.subject_keys(["email:h1:x"])
    assert SqlKeyStore(engine, MASTER).identifier_hash_key() == hash_key
    engine.dispose()


def test_keys_are_wrapped_and_shared_by_instances(tmp_path: Path) -> None:
    engine = create_engine_for(None, tmp_path / "keys.sqlite3")
    one, two = SqlKeyStore(engine, MASTER), SqlKeyStore(engine, MASTER)
    assert one.identifier_hash_key() == two.identifier_hash_key()
    assert len(one.identifier_hash_key()) == 32
    got = one.subject_keys(["s1", "s2"])
    assert set(got) == {"s1", "s2"} and got["s1"][0] != got["s2"][0]
    assert all(len(key) == 32 for _, key in got.values())
    assert two.subject_keys(["s1", "s2"]) == got
    assert one.subject_keys(["s1"]) == {"s1": got["s1"]}
    assert two.keys([got["s1"][0], "unknown"]) == {got["s1"][0]: got["s1"][1]}
    raw = (tmp_path / "keys.sqlite3").read_bytes()
    for _, key in got.values():
        assert key not in raw
    engine.dispose()


def test_a_cold_store_reads_known_subjects_keys_and_writes_only_new_ones(
    tmp_path: Path,
) -> None:
    engine = create_engine_for(None, tmp_path / "keys.sqlite3")
    known = SqlKeyStore(engine, MASTER).subject_keys(["s1", "s2"])
    cold = SqlKeyStore(engine, MASTER)  # a restarted process: nothing cached
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert cold.subject_keys(["s1", "s2"]) == known
    assert not [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    got = cold.subject_keys(["s1", "s3"])
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 and got["s1"] == known["s1"] and got["s3"][0] != known["s1"][0]
    assert SqlKeyStore(engine, MASTER).subject_keys(["s3"]) == {"s3": got["s3"]}
    engine.dispose()


def test_destroyed_keys_are_gone_for_every_instance(tmp_path: Path) -> None:
    engine = create_engine_for(None, tmp_path / "keys.sqlite3")
    store = SqlKeyStore(engine, MASTER)
    got = store.subject_keys(["s1", "s2", "s3"])
    kids = {s: kid for s, (kid, _) in got.items()}
    assert store.keys(kids.values()).keys() == set(kids.values())  # cached now
    assert store.destroy([kids["s1"], kids["s2"], "never-seen"]) == 2
    assert store.destroy([kids["s1"], kids["s2"]]) == 0
    assert store.destroy(["s3"]) == 0  # a subject is not a kid: nothing destroyed
    assert store.keys([kids["s1"], kids["s2"]]) == {}
    assert store.keys([kids["s3"]]) == {kids["s3"]: got["s3"][1]}
    fresh = SqlKeyStore(engine, MASTER)
    assert fresh.keys(kids.values()) == {kids["s3"]: got["s3"][1]}
    # a subject asked for again gets a new key, never the destroyed one back
    renewed = store.subject_keys(["s1"])["s1"]
    assert renewed[0] != kids["s1"] and renewed[1] != got["s1"][1]
    assert fresh.subject_keys(["s1"])["s1"] == renewed
    assert store.subject_keys(["s3"])["s3"] == got["s3"]  # not destroyed: unchanged
    engine.dispose()


def test_load_master_key_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "master.key"
    key = load_master_key(None, path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(None, path) == key
    assert load_master_key("", path) == key
    configured = os.urandom(32)
    elsewhere = tmp_path / "unused.key"
    assert load_master_key(b64(configured), elsewhere) == configured
    assert not elsewhere.exists()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_load_master_key_rejects_wrong_lengths(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError):
        load_master_key(b64(os.urandom(size)) or "AA", tmp_path / "unused.key")
    path = tmp_path / "master.key"
    path.write_text(b64(os.urandom(size)) + "\n")
    with pytest.raises(ValueError):
        load_master_key(None, path)


# --- the sealing log -----------------------------------------------------------------


def test_the_sealing_log_writes_no_personal_data_to_disk(
    tmp_path: Path, protector: Protector
) -> None:
    path = tmp_path / "log" / "log.sqlite3"
    raw = SqliteEventLog(path, "crm.events", partitions=3)
    log = SealingEventLog(raw, protector)
    events = [_event(t) for t in sorted(CATALOG)]
    positions = log.append(events)
    assert len(positions) == len(events)
    secrets = set().union(*(_secrets(e.model_dump(mode="json")) for e in events))
    assert {EMAIL, PHONE, "Zeferina", "Quintanilha", "77 Rua das Flores"} <= secrets
    records = list(log.read())
    assert len(records) == len(events)
    opened = protector.open_all([orjson.loads(r.value) for r in records])
    by_id = {e.event_id: e for e in events}
    for data in opened:
        event = parse_event(data)
        assert event == by_id[event.event_id]
    files = sorted(path.parent.iterdir())
    disk = b"".join(f.read_bytes() for f in files)  # the database and its WAL
    log.close()
    disk += b"".join(f.read_bytes() for f in sorted(path.parent.iterdir()) if f.is_file())
    leaked = sorted(s for s in secrets if s.encode() in disk)
    assert not leaked, f"plain personal data on disk: {leaked}"
    assert str(events[0].event_id).encode() in disk  # the rest is in the clear
