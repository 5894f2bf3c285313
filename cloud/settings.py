"""Settings of the cloud deployables (API, ingest, worker, demo), from env / .env."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER = "dev-only-insecure-secret-change-me"


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PREPAY_", env_file=".env", extra="ignore")

    environment: str = Field(default="development", pattern="^(development|test|production)$")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREPAY_DATABASE_URL", "DATABASE_URL"),
        description="owner/migration connection; unset = embedded PostgreSQL",
    )
    app_database_url: str | None = Field(
        default=None,
        description="connection of the application role; default: database_url as prepay_app",
    )
    app_role: str = "prepay_app"
    mqtt_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREPAY_MQTT_URL", "MQTT_URL"),
        description="mqtt://user:pass@host:port; unset = embedded broker",
    )
    mqtt_prefix: str = "prepay"
    gateway_broker_url: str | None = Field(
        default=None,
        description="broker URL handed to commissioned gateways (default: mqtt_url's host)",
    )
    mqtt_shared_group: str | None = "ingest"
    data_dir: Path = Path(".prepay")
    secret_key: SecretStr = SecretStr(_PLACEHOLDER)
    session_max_age_s: int = 12 * 3600
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    command_deadline_s: int = 120  # supply commands; a recharge has 24 h
    command_retry_s: float = 5.0

    @model_validator(mode="after")
    def _no_placeholder_secret_in_production(self) -> CloudSettings:
        if self.environment == "production" and self.secret_key.get_secret_value() == _PLACEHOLDER:
            raise ValueError("PREPAY_SECRET_KEY must be set in production")
        return self
