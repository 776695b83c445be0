"""API keys for LoopCRM's HTTP services (ingest gateway, read API).

``ApiKeyStore`` is the port, ``SqlApiKeyStore`` its adapter (PostgreSQL or SQLite).
Keys read ``crm_<key_id>_<secret>``; only a SHA-256 of the secret is stored, and no
secret ever appears in a log line, a repr or a listing. Imports only SQLAlchemy and the
standard library, so every entrypoint can use it.
"""

from auth.keys import (
    KEY_PREFIX,
    ApiKeyInfo,
    AuthError,
    NewApiKey,
    Principal,
    Scope,
    UnknownKeyError,
    parse_key,
)
from auth.store import DEFAULT_CACHE_TTL_S, ApiKeyStore, SqlApiKeyStore

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "KEY_PREFIX",
    "ApiKeyInfo",
    "ApiKeyStore",
    "AuthError",
    "NewApiKey",
    "Principal",
    "Scope",
    "SqlApiKeyStore",
    "UnknownKeyError",
    "parse_key",
]
