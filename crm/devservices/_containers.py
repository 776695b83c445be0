"""Kafka and PostgreSQL in Docker via testcontainers, used only when a daemon answers.

testcontainers 4.x's ``KafkaContainer`` drives Confluent images (its KRaft mode rejects
tags below 7.0.0 and its start script sources Confluent's /etc/confluent/docker files),
so ``ApacheKafkaContainer`` adapts it to the official ``apache/kafka`` image: same
start-script handshake (the advertised listener needs the mapped port, known only once
the container runs), but the image's own ``/etc/kafka/docker/run`` boots the broker.
"""

from __future__ import annotations

import re
from typing import Any

from crm.devservices._kafka_jars import KAFKA_VERSION

APACHE_KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE = "postgres:16"

_CLIENT_PORT = 9093  # PLAINTEXT, published to the host (KafkaContainer's default)
_BROKER_PORT = 9092  # inter-broker listener inside the container network
_CONTROLLER_PORT = 9094


def docker_available(timeout: float = 5) -> bool:
    """True if a Docker daemon answers a ping within ``timeout`` seconds.

    Uses testcontainers' own client, so DOCKER_HOST, docker contexts and
    ~/.testcontainers.properties are honoured exactly as they will be for containers.
    """
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False
    try:
        client = DockerClient(timeout=timeout)
    except Exception:
        return False
    try:
        return bool(client.client.ping())
    except Exception:
        return False
    finally:
        client.client.close()


def apache_kafka_env(cluster_id: str) -> dict[str, str]:
    """Environment for ``apache/kafka``'s run script: one KRaft broker+controller."""
    return {
        "CLUSTER_ID": cluster_id,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": (
            f"PLAINTEXT://0.0.0.0:{_CLIENT_PORT},BROKER://0.0.0.0:{_BROKER_PORT},"
            f"CONTROLLER://0.0.0.0:{_CONTROLLER_PORT}"
        ),
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "BROKER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{_CONTROLLER_PORT}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }


def apache_kafka_start_script(host: str, port: int) -> str:
    """The script the container waits for: advertise ``host:port``, then boot Kafka."""
    return (
        "#!/bin/sh\n"
        f'export KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://{host}:{port},'
        f"BROKER://$(hostname -i | cut -d' ' -f1):{_BROKER_PORT}\"\n"
        "exec /etc/kafka/docker/run\n"
    )


def make_kafka_container(image: str = APACHE_KAFKA_IMAGE) -> Any:
    """An unstarted ``ApacheKafkaContainer`` (see module doc); ``.start(timeout)``
    returns once the broker logged "Kafka Server started"."""
    try:  # testcontainers >= 4.15 moved the module; older releases only have this one
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    class ApacheKafkaContainer(KafkaContainer):
        def __init__(self, image: str) -> None:
            super().__init__(image, port=_CLIENT_PORT)
            self.env.pop("KAFKA_BROKER_ID", None)  # KRaft uses KAFKA_NODE_ID
            self.kraft_enabled = True
            self.wait_for = re.compile(r".*Kafka Server started.*")

        def _verify_min_kraft_version(self) -> None:
            """The base class compares against Confluent tags; every apache/kafka is KRaft."""

        def configure(self) -> None:
            self.with_envs(**apache_kafka_env(self.cluster_id))

        def tc_start(self) -> None:
            host = self.get_container_host_ip()
            port = self.get_exposed_port(self.port)
            script = apache_kafka_start_script(host, port)
            self.create_file(script.encode(), self.TC_START_SCRIPT)

    return ApacheKafkaContainer(image)


def make_postgres_container(image: str = POSTGRES_IMAGE) -> Any:
    """An unstarted ``PostgresContainer`` (psycopg2 URLs)."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer(image)
