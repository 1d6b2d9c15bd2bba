from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin, utcnow


class MerchantStatus:
    ACTIVE = "active"
    INACTIVE = "inactive"


class Merchant(IdMixin, TimestampMixin, Base):
    """A Shopify store using the service (one tenant)."""

    __tablename__ = "merchants"

    shop_domain: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default=MerchantStatus.ACTIVE)
    #: Shopify offline access token, Fernet-encrypted with the secret key; wiped on uninstall.
    shopify_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    shopify_scopes: Mapped[str | None] = mapped_column(String(1024), default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    installed_at: Mapped[datetime] = mapped_column(default=utcnow)
    uninstalled_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiToken(IdMixin, Base):
    """A merchant API bearer token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="default")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
