"""Settings from `KEYLEDGER_*` environment variables, validated at start-up."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from domain.errors import DomainError
from domain.scopes import ScopeCatalog

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIN_AUDIT_KEY_LENGTH = 32


class StartupError(Exception):
    """A setting that parses but does not work (e.g. an unreachable database); names the setting."""


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected secret (token, audit key) never appears in an error message.
    model_config = SettingsConfigDict(env_prefix="KEYLEDGER_", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(
        default="sqlite:///keyledger.db",
        description="SQLAlchemy URL of the event store and read models (sqlite:///FILE or postgresql://...)",
    )
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema for events and read models (default: public)"
    )
    redis_url: str | None = Field(default=None, description="Redis URL of shared rate-limit counters")
    operator_token: SecretStr | None = None
    resources: str = Field(default="nodes,edges,livedata,events", description="the resource catalog")
    insufficient_scope_status: int = 403
    redis_outage: Literal["open", "closed"] = Field(
        default="open",
        description="while Redis is unreachable: open (per-process counters) or closed (503)",
    )
    not_found_per_minute: int = Field(
        default=100, ge=0, description="NOT_FOUND answers per client address and minute before 429 (0: no limit)"
    )
    audit_key: SecretStr | None = Field(
        default=None, description="key of the audit HMAC chain; unset: no chain is written"
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 key signing audit checkpoints: base64 of the 32-byte private key, or a file path "
        "(created, mode 0600, if missing); unset: a file beside the SQLite store, or "
        "./keyledger-audit-signing.key with PostgreSQL",
    )
    alert_interval_seconds: float = Field(
        default=60.0, gt=0, le=60, description="how often each API process checks the alert conditions (seconds)"
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="let webhooks target private, loopback and link-local addresses, and http (development, tests)",
    )
    webhook_key: SecretStr | None = Field(
        default=None, description="master key webhook signing secrets are derived from; unset: webhook_key_file"
    )
    webhook_key_file: str = Field(
        default="keyledger-webhook.key",
        description="file holding the webhook master key, generated (mode 0600) on first use when missing",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a SQLAlchemy database URL") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value or None

    @field_validator("database_schema")
    @classmethod
    def _check_schema(cls, value: str | None) -> str | None:
        if value is not None and not _SCHEMA_RE.match(value):
            raise ValueError("must be a lower-case SQL identifier")
        return value

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: str) -> str:
        names = [n for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError("must name at least one resource")
        try:
            ScopeCatalog.of(names)
        except DomainError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("insufficient_scope_status")
    @classmethod
    def _check_scope_status(cls, value: int) -> int:
        if value not in (401, 403):
            raise ValueError("must be 403 or 401")
        return value

    @field_validator("audit_key")
    @classmethod
    def _check_audit_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # an empty variable means unset
        if len(value.get_secret_value()) < MIN_AUDIT_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_AUDIT_KEY_LENGTH} characters (openssl rand -hex 32)")
        return value

    @field_validator("webhook_key")
    @classmethod
    def _check_webhook_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_AUDIT_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_AUDIT_KEY_LENGTH} characters (openssl rand -hex 32)")
        return value

    @property
    def url(self) -> URL:
        return make_url(self.database_url)

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @property
    def catalog(self) -> ScopeCatalog:
        return ScopeCatalog.of(self.resources.split(","))
