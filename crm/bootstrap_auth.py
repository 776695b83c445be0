"""The composition root of API keys (beside ``crm.bootstrap``, which builds the log)."""

from __future__ import annotations

from typing import Final

from auth import SqlApiKeyStore
from crm.settings import Settings
from projections.sql import create_engine_for

AUTH_SCHEMA: Final = "auth"


def build_api_key_store(settings: Settings) -> SqlApiKeyStore:
    """PostgreSQL (schema ``auth``) when ``CRM_DATABASE_URL`` is set, else
    ``CRM_DATA_DIR/auth.sqlite3``. The table is created if missing."""
    engine = create_engine_for(settings.database_url, settings.data_dir / "auth.sqlite3")
    return SqlApiKeyStore(engine, schema=AUTH_SCHEMA if settings.database_url else None)
