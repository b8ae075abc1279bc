"""Settings read from the environment once, in cli.py, and passed down.

Names and defaults are part of the contract (DESIGN.md, "Command line and settings").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from receiver.domain.recipients import parse_addresses

SmtpTls = Literal["implicit", "starttls", "none", "auto"]


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
    # LISTEN needs a session of its own: behind PgBouncer in transaction mode, point this
    # past it (straight at PostgreSQL). Empty: DATABASE_URL.
    listen_database_url: str = ""
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)

    webhook_token: SecretStr | None = None
    webhook_token_file: Path | None = None
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    # Scoped tokens (DESIGN.md "Least privilege"): the gateways' (breaker reads and
    # outcomes only) and named operators' (`name token` a line; the name is the actor).
    gateway_token: SecretStr | None = None
    gateway_token_file: Path | None = None
    operator_tokens_file: Path | None = None
    _operator_tokens: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    allow_unauthenticated: bool = False
    # The role `migrate` grants what `serve` needs (audit_log: SELECT and INSERT only).
    db_app_role: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
    audit_seal_seconds: float = Field(default=60.0, gt=0)

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

    # The truth from Alertmanager (DESIGN.md): reconciliation with every peer's API, and
    # the dead man's switch (0 turns it off).
    alertmanager_urls: str | None = None
    reconcile_seconds: float = Field(default=30.0, gt=0)
    alertmanager_timeout_seconds: float = Field(default=5.0, gt=0)
    heartbeat_alertname: str = Field(default="Watchdog", min_length=1)
    heartbeat_timeout_seconds: float = Field(default=300.0, ge=0)

    slack_webhook_url: str | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    email_from: str | None = None
    email_to: str | None = None
    public_url: str | None = None
    # Retries give up by time (per channel, counted from when the row was queued); the
    # attempt count is an optional extra cap (unset or 0: none). 429s are not counted.
    notify_max_attempts: int | None = Field(default=None, ge=0)
    notify_backoff_base_seconds: float = Field(default=2.0, gt=0)
    notify_backoff_max_seconds: float = Field(default=300.0, gt=0)
    pagerduty_give_up_seconds: float = Field(default=3600.0, gt=0)
    slack_give_up_seconds: float = Field(default=3600.0, gt=0)
    email_give_up_seconds: float = Field(default=4 * 3600.0, gt=0)
    # Pacing, per replica: PagerDuty takes about 120 events a minute per routing key,
    # Slack about one message a second per webhook.
    pagerduty_events_per_minute: float = Field(default=120.0, gt=0)
    slack_messages_per_second: float = Field(default=1.0, gt=0)
    email_messages_per_second: float = Field(default=10.0, gt=0)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Legacy switch, still honoured when RECEIVER_SMTP_TLS is unset: true = starttls,
    # false = none, unset = STARTTLS when the server offers it.
    smtp_starttls: bool | None = None
    # implicit (SMTPS, port 465), starttls (required), none, auto (STARTTLS if offered).
    smtp_tls: SmtpTls | None = None
    # CA bundle (PEM) to verify the SMTP server's certificate with, for a private CA.
    smtp_ca_file: Path | None = None
    # Recipients per SMTP transaction: RFC 5321 servers must take 100, may refuse more.
    smtp_max_recipients: int = Field(default=100, ge=1, le=100)

    # The console's session cookie: signing key file (same file on every replica; unset:
    # derived from the API token, see receiver/ui/auth.py) and lifetime.
    ui_session_key_file: Path | None = None
    ui_session_seconds: float = Field(default=12 * 3600.0, ge=60, le=30 * 86400)

    db_pool_size: int = Field(default=10, ge=1)
    # Bounded time (DESIGN.md "Least privilege and bounded time"): a webhook is committed
    # or answered 503 within the deadline; the database bounds every statement, every lock
    # wait and every transaction left idle by a stuck client (receiver/db/engine.py).
    request_deadline_seconds: float = Field(default=5.0, gt=0, le=300)
    db_statement_timeout_seconds: float = Field(default=5.0, gt=0)
    # Group commit (receiver/service/group_commit.py): webhook deliveries that arrive
    # together are written in one transaction. A batch closes this long after its first
    # delivery arrived, or when it holds this many deliveries; 0 ms or 1 delivery: every
    # delivery its own transaction, as before.
    batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    batch_max_deliveries: int = Field(default=64, ge=1, le=10_000)
    # Serving processes on one port (SO_REUSEPORT), each with its own breaker view kept by
    # NOTIFY and its own background loops, as replicas are (receiver/cli.py).
    workers: int = Field(default=1, ge=1, le=64)
    db_lock_timeout_seconds: float = Field(default=2.0, gt=0)
    db_idle_in_transaction_timeout_seconds: float = Field(default=10.0, gt=0)
    # The timeouts travel in libpq's `options` startup parameter, which PgBouncer refuses
    # ("unsupported startup parameter: options"): behind it, set false, and each
    # transaction sets them with SET LOCAL instead (one more round trip per transaction).
    db_startup_options: bool = True
    # psycopg prepares a statement on its connection after a few uses (faster). Behind a
    # pooler that hands each transaction another server connection (PgBouncer < 1.21 in
    # transaction mode) the prepared statement is not there: set false.
    db_prepared_statements: bool = True
    log_level: str = "INFO"

    @field_validator("database_url", "listen_database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        # Operators paste libpq URLs (postgres://, postgresql://); SQLAlchemy needs the driver.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("alertmanager_urls")
    @classmethod
    def _peer_urls(cls, urls: str | None) -> str | None:
        for url in (u.strip() for u in (urls or "").split(",")):
            if url and not url.startswith(("http://", "https://")):
                raise SettingsError(
                    f"RECEIVER_ALERTMANAGER_URLS: {url!r} is not an http(s) base URL"
                    " (comma-separated, e.g. http://am-0:9093,http://am-1:9093)"
                )
        return urls

    @field_validator("db_app_role", mode="before")
    @classmethod
    def _blank_role_is_unset(cls, role: object) -> object:
        return None if isinstance(role, str) and not role.strip() else role

    @field_validator("webhook_token", "api_token", "gateway_token")
    @classmethod
    def _blank_is_unset(cls, token: SecretStr | None) -> SecretStr | None:
        # `RECEIVER_API_TOKEN=` (an unset variable in a compose file) must not become the
        # token "": every request with an empty bearer or basic password would match it.
        if token is not None and not token.get_secret_value().strip():
            return None
        return token

    @field_validator("notify_max_attempts", "smtp_tls", "smtp_ca_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _smtp_tls_agrees(self) -> Settings:
        # STARTTLS=true wants STARTTLS; STARTTLS=false only rules STARTTLS out (implicit
        # TLS never issues it).
        tls, starttls = self.smtp_tls, self.smtp_starttls
        if tls is not None and starttls is not None and (tls == "starttls") != starttls:
            raise SettingsError(
                f"RECEIVER_SMTP_TLS={self.smtp_tls} contradicts "
                f"RECEIVER_SMTP_STARTTLS={str(self.smtp_starttls).lower()}: set one of them"
            )
        return self

    def smtp_tls_mode_of_starttls(self) -> SmtpTls:
        if self.smtp_starttls is None:
            return "auto"
        return "starttls" if self.smtp_starttls else "none"

    @property
    def smtp_tls_mode(self) -> SmtpTls:
        """RECEIVER_SMTP_TLS, else what RECEIVER_SMTP_STARTTLS means."""
        return self.smtp_tls if self.smtp_tls is not None else self.smtp_tls_mode_of_starttls()

    @model_validator(mode="after")
    def _read_token_files(self) -> Settings:
        for name in ("webhook_token", "api_token", "gateway_token"):
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
        if self.operator_tokens_file is not None:
            self._operator_tokens = read_operator_tokens(self.operator_tokens_file)
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
        # Named operator tokens stand in for the all-powerful API token.
        missing = [
            n
            for n in ("webhook_token", "api_token")
            if getattr(self, n) is None and not (n == "api_token" and self.operator_tokens)
        ]
        if missing and not self.allow_unauthenticated:
            names = ", ".join(f"RECEIVER_{n.upper()}" for n in missing)
            raise SettingsError(
                f"{names} not set: set the token(s) (or their _FILE variants), or "
                "RECEIVER_ALLOW_UNAUTHENTICATED=true to run without authentication"
            )
        check_tokens(self.tokens_by_role())

    @property
    def operator_tokens(self) -> dict[str, SecretStr]:
        """Operator name -> token, from RECEIVER_OPERATOR_TOKENS_FILE."""
        return self._operator_tokens

    def tokens_by_role(self) -> list[tuple[str, str]]:
        """(role, token) of every configured token; role names say where each is set."""
        found = [
            (f"RECEIVER_{name.upper()}", secret.get_secret_value())
            for name in ("webhook_token", "api_token", "gateway_token")
            if (secret := getattr(self, name)) is not None
        ]
        found += [
            (f"operator {who!r} (RECEIVER_OPERATOR_TOKENS_FILE)", secret.get_secret_value())
            for who, secret in self.operator_tokens.items()
        ]
        return found

    @property
    def listen_url(self) -> str:
        """Where the breaker listener holds its LISTEN session."""
        return self.listen_database_url or self.database_url

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
    def alertmanager_peers(self) -> list[str]:
        """RECEIVER_ALERTMANAGER_URLS as a list: every peer of the cluster, in order."""
        return [u.strip() for u in (self.alertmanager_urls or "").split(",") if u.strip()]

    @property
    def email_recipients(self) -> list[str]:
        return parse_addresses(self.email_to)


MIN_TOKEN_CHARS = 16
# The placeholders of deploy/*.example (tests/unit/test_tokens_policy.py keeps them in step):
# a copied example file must never become a working token.
PLACEHOLDER_TOKENS = frozenset(
    {
        "replace-me-with-a-long-random-api-token",
        "replace-me-with-a-long-random-webhook-token",
        "replace-me-with-a-long-random-gateway-token",
        "replace-me-with-a-long-random-operator-token",
    }
)
_OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")


def read_operator_tokens(path: Path) -> dict[str, SecretStr]:
    """`name token` a line; blank lines and `#` comments skipped. Errors name the line,
    never the token."""
    where = f"RECEIVER_OPERATOR_TOKENS_FILE={path}"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: {exc}") from exc
    tokens: dict[str, SecretStr] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise SettingsError(f"{where} line {number}: expected `name token`")
        name, token = fields
        if not _OPERATOR_NAME.match(name):
            raise SettingsError(
                f"{where} line {number}: operator name {name[:40]!r}: 1 to 100 letters, "
                "digits and ._@+- , starting with a letter or digit"
            )
        if name in tokens:
            raise SettingsError(f"{where} line {number}: operator {name!r} is listed twice")
        tokens[name] = SecretStr(token)
    if not tokens:
        raise SettingsError(f"{where} names no operator")
    return tokens


def check_tokens(tokens: list[tuple[str, str]]) -> None:
    """Refuse tokens that are short, placeholders, not printable ASCII or shared between
    roles (a shared token would make one role's requests look like another's). Messages
    name the setting, never the token."""
    seen: dict[str, str] = {}
    for role, token in tokens:
        if len(token) < MIN_TOKEN_CHARS:
            raise SettingsError(
                f"{role} is shorter than {MIN_TOKEN_CHARS} characters: use a long random token "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if token in PLACEHOLDER_TOKENS:
            raise SettingsError(f"{role} is the placeholder from deploy/*.example: replace it")
        if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
            raise SettingsError(f"{role} must be printable ASCII without spaces")
        if token in seen:
            raise SettingsError(f"{seen[token]} and {role} share a token: give each its own")
        seen[token] = role
