"""The HTTP ingest gateway: touchpoints POST events, the gateway validates and stores them.

``create_app(event_log, deadletters_log, key_store, limits)`` builds the FastAPI app;
``crm ingest serve`` runs it with uvicorn. See ``ingest`` for the storage contract,
``cloudevents`` for the CloudEvents mapping and ``event_ids`` for derived event ids.
"""

from producers.gateway.app import create_app
from producers.gateway.health import CachedCheck, KafkaProbe, always_ready
from producers.gateway.ingest import ERROR_HEADER, ORIGIN_HEADER, BodyKind, Ingestor
from producers.gateway.limits import GatewayLimits

__all__ = [
    "ERROR_HEADER",
    "ORIGIN_HEADER",
    "BodyKind",
    "CachedCheck",
    "GatewayLimits",
    "Ingestor",
    "KafkaProbe",
    "always_ready",
    "create_app",
]
