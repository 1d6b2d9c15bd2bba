"""Merchants: creation, API tokens, the uninstall, and the shop lookup used on the hot path."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.db import Database, utcnow
from app.errors import InvalidInput
from app.mail.address import is_email
from app.merchants.models import ApiToken, Merchant, MerchantStatus
from app.merchants.settings import MerchantSettings, save, settings_of
from app.security import SecretBox, hash_token, new_token

_SHOP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,60}\.myshopify\.com$")
log = structlog.get_logger(__name__)
MERCHANT_TOKEN_PREFIX = "dsm"  # noqa: S105 (a label, not a secret)


class MerchantError(InvalidInput):
    """A merchant operation refused for a reason the caller can act on."""


def normalize_shop_domain(shop: str) -> str:
    """``My-Store.myshopify.com`` -> ``my-store.myshopify.com``; anything else is refused."""
    domain = shop.strip().lower()
    if not _SHOP_RE.match(domain):
        raise MerchantError(f"shop must be a *.myshopify.com domain, got {shop!r}")
    return domain


def validate_email(email: str) -> str:
    email = email.strip()
    if not is_email(email):
        raise MerchantError(f"not an email address: {email!r}")
    return email


async def get_merchant(session: AsyncSession, merchant_id: uuid.UUID) -> Merchant | None:
    """The merchant, as this session holds it or from the database."""
    return await session.get(Merchant, merchant_id)


async def get_by_shop(session: AsyncSession, shop_domain: str) -> Merchant | None:
    merchant: Merchant | None = await session.scalar(
        select(Merchant).where(Merchant.shop_domain == shop_domain)
    )
    return merchant


async def create_merchant(
    session: AsyncSession,
    shop: str,
    email: str,
    *,
    access_token: str | None = None,
    box: SecretBox | None = None,
) -> tuple[Merchant, str]:
    """Create an active merchant and its first API token (returned in clear, once), with the
    store's Admin API ``access_token`` when given (encrypted with ``box``)."""
    domain = normalize_shop_domain(shop)
    email = validate_email(email)
    if access_token is not None:
        access_token = check_access_token(access_token)
    if await get_by_shop(session, domain) is not None:
        raise MerchantError(f"a merchant for {domain} already exists")
    merchant = Merchant(shop_domain=domain, email=email, status=MerchantStatus.ACTIVE, settings={})
    if access_token is not None:
        if box is None:
            raise ValueError("an access token is stored encrypted: pass the SecretBox")
        merchant.shopify_token_encrypted = box.encrypt(access_token)
    session.add(merchant)
    await session.flush()
    token = await issue_token(session, merchant.id)
    return merchant, token


#: A Shopify Admin API access token: a ``shp??_`` prefix (``shpat_``, ``shpca_``, ``shppa_``,
#: ``shpua_``) and 32 hex digits since April 2020 (longer ones allowed, up to 200), or the 32
#: characters of an older token; never whitespace.
_ACCESS_TOKEN = re.compile(r"^(?:shp[a-z]{2}_[A-Za-z0-9]{32,200}|[A-Za-z0-9]{32})$")


def check_access_token(token: str) -> str:
    """The token as Shopify issued it, or ``InvalidInput`` naming ``access_token``."""
    token = token.strip()
    if not _ACCESS_TOKEN.fullmatch(token):
        raise InvalidInput(
            "expected the store's Admin API access token, like shpat_ and 32 hex digits "
            "(Settings > Apps > Develop apps > your app > API credentials)",
            field="access_token",
        )
    return token


async def set_shopify_token(
    session: AsyncSession, box: SecretBox, merchant: Merchant, token: str | None
) -> None:
    """Store the store's Admin API token, encrypted (``None`` forgets it). Its scopes are not
    known until the first Admin API call reports them."""
    merchant.shopify_token_encrypted = (
        box.encrypt(check_access_token(token)) if token is not None else None
    )
    merchant.shopify_scopes = None
    await session.flush()


def shopify_token(box: SecretBox, merchant: Merchant) -> str | None:
    """The store's Admin API token in clear, for a call to Shopify; None if there is none."""
    if merchant.shopify_token_encrypted is None:
        return None
    return box.decrypt(merchant.shopify_token_encrypted)


async def issue_token(session: AsyncSession, merchant_id: uuid.UUID, name: str = "default") -> str:
    token = new_token(MERCHANT_TOKEN_PREFIX)
    session.add(
        ApiToken(merchant_id=merchant_id, token_hash=hash_token(token), prefix=token[:8], name=name)
    )
    await session.flush()
    return token


async def authenticate(session: AsyncSession, token: str) -> Merchant | None:
    """The active merchant owning this bearer token, or None."""
    merchant: Merchant | None = await session.scalar(
        select(Merchant)
        .join(ApiToken, ApiToken.merchant_id == Merchant.id)
        .where(
            ApiToken.token_hash == hash_token(token),
            ApiToken.revoked_at.is_(None),
            Merchant.status == MerchantStatus.ACTIVE,
        )
    )
    return merchant


async def deactivate(session: AsyncSession, merchant: Merchant) -> bool:
    """``app/uninstalled``: stop acting for the shop and forget its Shopify token. Returns
    whether this call did it (False: already inactive).

    One conditional UPDATE, so two deliveries of the uninstall processed at once cannot both
    act (on PostgreSQL the second waits for the row and then finds it inactive).

    Orders, timelines and accounting stay: the merchant may reinstall, and records that must be
    kept are not ours to delete (customer data goes only on ``shop/redact``). API tokens stay
    too; they are refused while the merchant is inactive.
    """
    now = utcnow()
    result = await session.execute(
        update(Merchant)
        .where(Merchant.id == merchant.id, Merchant.status == MerchantStatus.ACTIVE)
        .values(
            status=MerchantStatus.INACTIVE,
            shopify_token_encrypted=None,
            shopify_scopes=None,
            uninstalled_at=now,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    done = bool(getattr(result, "rowcount", 0))
    if done:  # keep the loaded object truthful without writing it again
        for attr, value in (
            ("status", MerchantStatus.INACTIVE),
            ("shopify_token_encrypted", None),
            ("shopify_scopes", None),
            ("uninstalled_at", now),
            ("updated_at", now),
        ):
            set_committed_value(merchant, attr, value)
    return done


@dataclass(frozen=True, slots=True)
class ShopEntry:
    merchant_id: uuid.UUID
    active: bool


class MerchantDirectory:
    """shop domain -> merchant, cached for a few seconds for the webhook hot path.

    Only answers that fail safe are cached. An active shop is cached for ``ttl``: a deactivation
    takes effect within that time, and webhooks for an inactive shop that slip through are
    ignored by the worker anyway. An unknown shop is cached for a second (its webhooks get a 404,
    which Shopify retries). An inactive shop is never cached: its webhooks get a 200 "ignored"
    that Shopify does not retry, so a reinstall must be seen at once or its first orders are lost.
    """

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ShopEntry | None]] = {}
        #: One database lookup per shop at a time; concurrent callers share it (single flight).
        self._inflight: dict[str, asyncio.Future[ShopEntry | None]] = {}

    async def lookup(self, shop_domain: str) -> ShopEntry | None:
        now = time.monotonic()
        hit = self._cache.get(shop_domain)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            if hit[1] is not None and hit[1].active:
                # Stale but safe (see above): answer now, refresh in the background.
                if shop_domain not in self._inflight:
                    self._refresh(shop_domain).add_done_callback(_consume)
                return hit[1]
        pending = self._inflight.get(shop_domain)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._refresh(shop_domain)

    def _refresh(self, shop_domain: str) -> asyncio.Future[ShopEntry | None]:
        future: asyncio.Future[ShopEntry | None] = asyncio.ensure_future(self._load(shop_domain))
        self._inflight[shop_domain] = future
        future.add_done_callback(lambda _: self._inflight.pop(shop_domain, None))
        return future

    async def _load(self, shop_domain: str) -> ShopEntry | None:
        async with self.db.sessionmaker() as session:
            row = (
                await session.execute(
                    select(Merchant.id, Merchant.status).where(Merchant.shop_domain == shop_domain)
                )
            ).first()
        now = time.monotonic()
        entry = None if row is None else ShopEntry(row[0], row[1] == MerchantStatus.ACTIVE)
        if entry is None:
            # Unknown shops are cached briefly too, so a flood of them cannot hammer the database.
            self._cache[shop_domain] = (now + min(self.ttl, 1.0), None)
        elif entry.active:
            self._cache[shop_domain] = (now + self.ttl, entry)
        else:
            self._cache.pop(shop_domain, None)
        return entry

    def forget(self, shop_domain: str) -> None:
        """Drop the cached answer for this shop (the next lookup reads the database)."""
        self._cache.pop(shop_domain, None)


def _consume(future: asyncio.Future[ShopEntry | None]) -> None:
    """Background refreshes: a failure only means the stale entry stays a little longer."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("directory.refresh_failed", error=repr(future.exception()))


async def change_settings(
    session: AsyncSession, merchant: Merchant, **sections: Any
) -> MerchantSettings:
    """Replace whole sections of the merchant's settings (``routing=RoutingSettings(...)``);
    returns them all."""
    changed = msgspec.structs.replace(settings_of(merchant), **sections)
    save(merchant, changed)
    await session.flush()
    return changed
