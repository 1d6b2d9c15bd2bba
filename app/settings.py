"""Typed settings, read once from the environment (prefix ``DROPSHIP_``).

Nothing else in the code base reads the environment: the one ``Settings`` object is built by the
CLI (or a test) and passed down explicitly.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SHOPIFY_API_VERSION = "2025-10"
#: Settings that are URLs and may carry a password (``scheme://user:pass@host``).
_URLS_WITH_PASSWORDS = ("database_url", "redis_url", "smtp_url")


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``: safe to print or log."""
    try:
        parts = urlsplit(url)
        if "://" not in url:
            raise ValueError(url)
        if parts.password is None:
            return url
    except ValueError:  # not even a URL: it could be anything, show none of it
        return "(an unparseable URL)"
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Settings(BaseSettings):
    # Validation errors must not echo a value back: a bad URL may still hold a password.
    model_config = SettingsConfigDict(
        env_prefix="DROPSHIP_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite+aiosqlite:///var/dropship.db"
    redis_url: str | None = None
    secret_key: str | None = Field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8000"

    shopify_api_key: str | None = None
    shopify_api_secret: str | None = Field(default=None, repr=False)
    shopify_old_api_secret: str | None = Field(default=None, repr=False)
    shopify_api_version: str = DEFAULT_SHOPIFY_API_VERSION
    shopify_admin_url: str = "https://{shop}/admin/api/{version}"

    stripe_api_base: str | None = None
    #: The platform's key: calls for merchants connected by account id (``Stripe-Account``).
    stripe_secret_key: str | None = Field(default=None, repr=False)
    #: Verifies ``Stripe-Signature``; a comma-separated list holds the old and the new secret
    #: during a rotation.
    stripe_webhook_secret: str | None = Field(default=None, repr=False)

    smtp_url: str | None = None
    mail_from: str = "orders@localhost"

    #: The carrier-tracking aggregator (AfterShip): with a key, shipments of suppliers whose
    #: connector reports no tracking of its own are registered there.
    aftership_api_key: str | None = Field(default=None, repr=False)
    aftership_webhook_secret: str | None = Field(default=None, repr=False)
    aftership_api_url: str = "https://api.aftership.com/tracking/2025-07"

    # Not in the public contract: operator knobs with safe defaults.
    var_dir: Path = Path("var")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    env: Literal["development", "production", "test"] = "development"
    #: Largest number of webhooks written in one group commit.
    ingest_batch_max: int = 256
    #: Seconds between outbox relay polls when it is idle.
    relay_interval: float = 0.2
    #: Work older than this with no progress is re-enqueued by the sweeper (seconds).
    stale_after: int = 300
    worker_threads: int = 8
    #: Longest pause, in milliseconds, of an idle queue's consumer between two polls of Redis
    #: (a busy queue is read without pause). Shorter answers a quiet queue sooner; each poll is a
    #: Lua script run, and a worker polls two Redis lists per queue (the queue and its retries).
    worker_idle_poll_ms: int = Field(default=1000, ge=10, le=10_000)
    #: The queues a worker process consumes, comma-separated (``placement,intake``); unset:
    #: every queue. Dedicated processes per kind of work (``app.jobs.task.QUEUES``).
    worker_queues: str | None = None
    #: A port on which ``dropship worker`` serves its own Prometheus metrics; unset: none.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: When set, ``GET /metrics`` asks for ``Authorization: Bearer <token>``.
    metrics_token: str | None = Field(default=None, repr=False)
    #: Outbound webhooks may go to ``http://`` and loopback (a receiver on this machine, the
    #: tests); never to other private addresses.
    outbound_allow_http: bool = False

    @field_validator(
        "redis_url",
        "smtp_url",
        "stripe_api_base",
        "secret_key",
        "shopify_api_key",
        "shopify_api_secret",
        "shopify_old_api_secret",
        "stripe_webhook_secret",
        "stripe_secret_key",
        "aftership_api_key",
        "aftership_webhook_secret",
        "worker_queues",
        "metrics_token",
        "metrics_port",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("expected smtp://user:pass@host:port (or smtps:// for TLS)")
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() (and so any log of the settings) show URLs without their passwords;
        # the other secrets are ``repr=False``.
        for name, value in super().__repr_args__():
            if name in _URLS_WITH_PASSWORDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def consumed_queues(self) -> set[str] | None:
        """The queues ``worker_queues`` names, or None for every queue."""
        if self.worker_queues is None:
            return None
        names = {q.strip() for q in self.worker_queues.split(",") if q.strip()}
        return names or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_broker(self) -> bool:
        """No Redis configured: ``serve`` runs the workers in-process."""
        return self.redis_url is None

    def resolved_secret_key(self) -> str:
        """The secret key; in development one is generated once into ``var/``.

        Production (``DROPSHIP_ENV=production``) refuses to start without an explicit key, so a
        restarted container never silently loses the ability to decrypt stored credentials.
        """
        if self.secret_key:
            return self.secret_key
        if self.env == "production":
            raise RuntimeError("DROPSHIP_SECRET_KEY must be set in production")
        path = self.var_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
