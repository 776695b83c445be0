"""Real Kafka and PostgreSQL on 127.0.0.1 without Docker, for development and tests.

- ``LocalKafka``: a KRaft broker+controller from Maven Central jars (``kafka``)
- ``LocalPostgres``: a cluster from the system's PostgreSQL binaries (``postgres``)
- ``DevStack``: both, detached, behind ``crm dev up/down/status/env`` (``stack``)
- ``services_for_tests``: env-named, testcontainers or local services (``testing``)
"""

from crm.devservices.errors import DevServiceError
from crm.devservices.kafka import KAFKA_VERSION, LocalKafka, ensure_kafka_jars
from crm.devservices.postgres import LocalPostgres
from crm.devservices.stack import DevStack

__all__ = [
    "KAFKA_VERSION",
    "DevServiceError",
    "DevStack",
    "LocalKafka",
    "LocalPostgres",
    "ensure_kafka_jars",
]
