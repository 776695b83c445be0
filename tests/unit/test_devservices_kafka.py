"""Kafka dev service: pure helpers (no broker)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import pytest

from crm.devservices import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8 encodes to "-" first: kafka-storage would read such an id as an option
    draws: Iterator[bytes] = iter([b"\xf8" + bytes(15), b"\x00" + bytes(15)])
    monkeypatch.setattr(secrets, "token_bytes", lambda n: next(draws))
    cluster_id = kafka.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(bytes(16)).decode().rstrip("=")


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {kafka.new_cluster_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert base64.urlsafe_b64decode(cluster_id + "==") != b""
