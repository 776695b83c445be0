"""Settings, read from ``CRM_*`` environment variables (and a ``.env`` file if present).

One class for the command line; each later deployable (ingest gateway, processor, read
API) extends it with its own fields. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the log and the projections live.

    With neither ``CRM_KAFKA_BOOTSTRAP`` nor ``CRM_DATABASE_URL`` set, everything runs
    embedded under ``CRM_DATA_DIR`` (an SQLite event log and SQLite projections).
    """

    model_config = SettingsConfigDict(env_prefix="CRM_", env_file=".env", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, e.g. 127.0.0.1:9092; unset = embedded"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of PostgreSQL, e.g. postgresql+psycopg2://u@host/db",
    )
    data_dir: Path = Field(default=Path(".crm"), description="embedded mode's data folder")
    topic: str = Field(default="crm.events", description="the event topic")
    deadletter_topic: str = Field(default="crm.deadletters", description="dead-letter topic")
    partitions: int = Field(default=6, ge=1, le=1024, description="partitions of new topics")
    replication_factor: int = Field(default=1, ge=1, le=10)
    kafka_client_id: str = "loopcrm"
    kafka_delivery_timeout_ms: int = Field(
        default=30_000, ge=1_000, description="how long an append may wait for acks=all"
    )

    projection_schema: str = Field(
        default="crm", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL schema"
    )
    shared_identifier_threshold: int = Field(
        default=3,
        ge=1,
        description="an identifier linked to more than this many account ids, emails or "
        "phones is shared (a family phone, a till email) and links nobody",
    )
    projection_async_commit: bool = Field(
        default=True,
        description="PostgreSQL: projection batches that derived no events commit without "
        "waiting for the WAL flush (a database crash loses their last few hundred ms, "
        "checkpoints included, and the processor applies them again from the log)",
    )
    replay_retain_customers: int = Field(
        default=250_000,
        ge=0,
        description="crm replay keeps up to this many customers in memory between its "
        "batches and writes each once (~2.5 KB each); 0 = write them after every batch",
    )
    api_max_lag: int = Field(
        default=10_000, ge=0, description="/readyz fails when projections are further behind"
    )
    reporting_currency: str = Field(
        default="EUR", pattern=r"^[A-Z]{3}$", description="currency of assessment figures"
    )
    fx_rates: dict[str, float] = Field(
        default={"EUR": 1.0, "USD": 0.92, "GBP": 1.17},
        description="units of the reporting currency per unit of each currency (JSON); "
        "orders in other currencies are left out of assessments and counted",
    )
    assessment_horizon_weeks: float = Field(
        default=52, gt=0, le=520, description="CLV horizon of assessments"
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="base64url of 32 random bytes that wrap every data key (privacy/); "
        "unset = CRM_DATA_DIR/master.key, created on first use",
    )
    privacy_schema: str = Field(
        default="privacy",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the key store (never rebuilt by a replay)",
    )
    marketing_consent: Literal["opt_out", "opt_in"] = Field(
        default="opt_out",
        description="opt_out: campaigns skip customers who withdrew marketing consent for "
        "the channel; opt_in: they also skip those who never granted it",
    )

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap is None
