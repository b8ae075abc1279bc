"""Settings read from the environment once, in cli.py, and passed down.

Names and defaults are part of the contract (DESIGN.md, "Command line and settings").
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Settings that can never work; the server refuses to start with this message."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIVER_", extra="ignore")

    # Aliases skip the prefix: DATABASE_URL is the name every PostgreSQL tool uses.
    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL, postgresql+psycopg://user:pass@host:5432/db",
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)

    webhook_token: SecretStr | None = None
    webhook_token_file: Path | None = None
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    allow_unauthenticated: bool = False

    tenant_label: str = Field(default="tenant_id", min_length=1)

    breaker_open_seconds: float = Field(default=60.0, gt=0)
    breaker_max_open_seconds: float = Field(default=900.0, gt=0)
    half_open_probes: int = Field(default=10, ge=1)
    probe_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    half_open_probation_seconds: float = Field(default=60.0, ge=0)
    half_open_admit_ratio: float = Field(default=0.1, gt=0, le=1)
    max_isolated_percent: float = Field(default=20.0, ge=0, le=100)
    correlation_window_seconds: float = Field(default=600.0, ge=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    sla_check_interval_seconds: float = Field(default=5.0, gt=0)

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    slack_webhook_url: str | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    email_from: str | None = None
    email_to: str | None = None
    public_url: str | None = None
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_backoff_base_seconds: float = Field(default=2.0, gt=0)
    notify_backoff_max_seconds: float = Field(default=300.0, gt=0)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool | None = None

    # The console's session cookie: signing key file (same file on every replica; unset:
    # derived from the API token, see receiver/ui/auth.py) and lifetime.
    ui_session_key_file: Path | None = None
    ui_session_seconds: float = Field(default=12 * 3600.0, ge=60, le=30 * 86400)

    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        # Operators paste libpq URLs (postgres://, postgresql://); SQLAlchemy needs the driver.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("webhook_token", "api_token")
    @classmethod
    def _blank_is_unset(cls, token: SecretStr | None) -> SecretStr | None:
        # `RECEIVER_API_TOKEN=` (an unset variable in a compose file) must not become the
        # token "": every request with an empty bearer or basic password would match it.
        if token is not None and not token.get_secret_value().strip():
            return None
        return token

    @model_validator(mode="after")
    def _read_token_files(self) -> Settings:
        for name in ("webhook_token", "api_token"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise SettingsError(
                    f"set RECEIVER_{name.upper()} or RECEIVER_{name.upper()}_FILE, not both"
                )
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise SettingsError(f"RECEIVER_{name.upper()}_FILE={path}: {exc}") from exc
            if not token:
                raise SettingsError(f"RECEIVER_{name.upper()}_FILE={path} is empty")
            setattr(self, name, SecretStr(token))
        return self

    @property
    def ui_session_key(self) -> bytes | None:
        """The console's signing key from RECEIVER_UI_SESSION_KEY_FILE (None: unset)."""
        path = self.ui_session_key_file
        if path is None:
            return None
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise SettingsError(f"RECEIVER_UI_SESSION_KEY_FILE={path}: {exc}") from exc
        if len(key) < 32:
            raise SettingsError(
                f"RECEIVER_UI_SESSION_KEY_FILE={path} holds {len(key)} bytes; use at least 32"
                " random bytes (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return key

    def check_startable(self) -> None:
        """Refuse configurations that would serve but be unsafe or useless."""
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL is not set (make run starts a local PostgreSQL for you)"
            )
        self.ui_session_key  # noqa: B018 (a bad key file refuses to start)
        missing = [n for n in ("webhook_token", "api_token") if getattr(self, n) is None]
        if missing and not self.allow_unauthenticated:
            names = ", ".join(f"RECEIVER_{n.upper()}" for n in missing)
            raise SettingsError(
                f"{names} not set: set the token(s) (or their _FILE variants), or "
                "RECEIVER_ALLOW_UNAUTHENTICATED=true to run without authentication"
            )

    @property
    def enabled_channels(self) -> list[str]:
        """Channels whose settings are complete: a channel without settings is off."""
        on = []
        if self.pagerduty_routing_key is not None:
            on.append("pagerduty")
        if self.slack_webhook_url:
            on.append("slack")
        if self.smtp_host and self.email_from and self.email_recipients:
            on.append("email")
        return on

    @property
    def email_recipients(self) -> list[str]:
        return [a.strip() for a in (self.email_to or "").split(",") if a.strip()]
