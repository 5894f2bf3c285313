"""Settings of the cloud deployables (API, ingest, worker, demo), from env / .env."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
_HOW = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


#: Keys anyone can read in the project's history (the development placeholder of old).
_PUBLISHED = frozenset({"dev-only-insecure-secret-change-me"})


class WeakSecret(ValueError):
    """The session signing key is missing or too weak to sign operators' sessions."""


def weak_secret(key: str) -> str | None:
    """Why ``key`` is too weak to sign sessions (None when it is strong enough): at least
    32 bytes, and not a repetition of a few characters (``aaaa…``, ``abab…``)."""
    if key in _PUBLISHED:
        return "is a key published in this project's history"
    if len(key.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    if len(set(key)) < 16:
        return "repeats too few different characters"
    return None


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
    secret_key: SecretStr | None = Field(
        default=None, description="session signing key; required by `prepay api`"
    )
    session_max_age_s: int = 12 * 3600
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # `prepay api` / `prepay miniapp` processes sharing the port (one per core: the API is
    # CPU-bound under a notification storm; every decision about money is in the database)
    api_processes: int = 1
    ingest_metrics_port: int = 9101  # `prepay ingest`'s /metrics (0: none)
    worker_metrics_port: int = 9102  # `prepay worker`'s /metrics (0: none)
    # a sale's A5 receipt drawn in the background as soon as it commits (the click on 打印
    # then finds it drawn); off in the test suite, where nobody prints
    draw_receipts_ahead: bool = True
    command_deadline_s: int = 120  # supply commands; a recharge has 24 h
    command_retry_s: float = 5.0

    def session_secret(self, *, required: bool) -> str:
        """The key that signs operators' sessions. A key that is set must be strong,
        whatever ``environment`` says. Unset, a process that serves sessions
        (``required``: ``prepay api``) refuses to start; any other gets a random key of its
        own (its sessions, if any, end with it: the tests, ``prepay check``, ingest)."""
        if self.secret_key is None:
            if required:
                raise WeakSecret(f"PREPAY_SECRET_KEY is not set; {_HOW}")
            return secrets.token_urlsafe(48)
        key = self.secret_key.get_secret_value()
        if (why := weak_secret(key)) is not None:
            raise WeakSecret(f"PREPAY_SECRET_KEY {why}; {_HOW}")
        return key
