"""Order validation: payment, shipping address, catalog. Each check's outcome lands on the timeline.

- Payment not settled (pending review, unpaid, voided...): the order is held (``on_hold``) until
  an ``orders/updated`` says otherwise.
- Incomplete address or unknown SKUs: a person must act (``needs_attention`` plus an entry in
  the exceptions queue naming the problem).
- Otherwise: ``ready_to_route``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.codes import is_country
from app.exceptions.service import open_exception, resolve_exceptions
from app.merchants.settings import MerchantSettings
from app.orders.models import Order, OrderStatus
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.service import record, set_status

#: The exceptions-queue kind for an order that failed validation.
VALIDATION_FAILED = "validation_failed"
#: Countries whose addresses have no postal code.
_NO_POSTCODE_LIST = (
    "AE AG AO AW BF BI BJ BO BS BW BZ CD CF CG CI CK CM DJ DM ER FJ GA GD GH GM GQ GY HK HM JM "
    "KI KM KN KP LC ML MO MR MW NR NU QA RW SB SC SL SR ST SY TD TF TG TK TL TO TT TV UG VU YE ZW"
)
NO_POSTCODE = frozenset(_NO_POSTCODE_LIST.split(" "))
#: Countries where Shopify and carriers require the province/state.
PROVINCE_REQUIRED = frozenset({"US", "CA", "AU", "BR", "MX", "IN", "CN", "JP", "IT", "ES", "AR"})


@dataclass
class Verdict:
    status: str
    reasons: list[str] = field(default_factory=list)


def check_payment(financial_status: str | None, routable: tuple[str, ...]) -> str | None:
    if financial_status in routable:
        return None
    if financial_status == "pending":
        return "payment is pending review"
    return f"payment status is {financial_status or 'unknown'}"


def check_address(addr: dict[str, Any] | None) -> list[str]:
    if not addr:
        return ["no shipping address"]
    missing = []
    if not (addr.get("name") or addr.get("last_name") or addr.get("company")):
        missing.append("name")
    for key in ("address1", "city"):
        if not addr.get(key):
            missing.append(key)
    country = addr.get("country_code")
    unknown = bool(country) and not is_country(country)
    if not country:
        missing.append("country_code")
    elif not unknown and country not in NO_POSTCODE and not addr.get("zip"):
        missing.append("zip")
    if country in PROVINCE_REQUIRED and not (addr.get("province_code") or addr.get("province")):
        missing.append("province_code")
    problems = [f"shipping address has no {', '.join(missing)}"] if missing else []
    if unknown:
        # Shopify sent it, so the order is kept; no supplier ships to a code that is no country.
        problems.append(f"shipping address country_code {country!r} is not an ISO country code")
    return problems


async def unknown_skus(session: AsyncSession, order: Order) -> list[str]:
    """Lines whose SKU is empty or offered by no active supplier of the merchant."""
    wanted = {ln.sku for ln in order.lines if ln.sku}
    known: set[str] = set()
    if wanted:
        known = set(
            (
                await session.scalars(
                    select(SupplierProduct.sku)
                    .join(Supplier, Supplier.id == SupplierProduct.supplier_id)
                    .where(
                        SupplierProduct.merchant_id == order.merchant_id,
                        SupplierProduct.sku.in_(wanted),
                        Supplier.status == "active",
                    )
                    .distinct()
                )
            ).all()
        )
    problems = []
    for ln in order.lines:
        if ln.quantity <= 0:
            continue
        if not ln.sku:
            problems.append(f"line {ln.position + 1} ({ln.title}) has no SKU")
        elif ln.sku not in known:
            problems.append(f"SKU {ln.sku} is not in any active supplier's catalog")
    return problems


async def validate(
    session: AsyncSession, order: Order, settings: MerchantSettings, *, fresh: bool = False
) -> Verdict:
    """Run every check, record each outcome and move the order to its next status.

    An earlier failed validation's exceptions-queue entry is closed first: it described the
    order as it was; if the problem is still there a new entry says so. (``fresh``: the order
    was created in this transaction, so it has no entry to close.)
    """
    if not fresh:
        await resolve_exceptions(session, order, (VALIDATION_FAILED,))
    routable = settings.routable_financial_statuses
    payment = check_payment(order.financial_status, routable)
    record(
        session,
        order,
        "validation.payment",
        payment or f"payment ok ({order.financial_status})",
        ok=payment is None,
        financial_status=order.financial_status,
    )
    ships = any(ln.requires_shipping for ln in order.lines)
    address = check_address(order.shipping_address) if ships else []
    record(
        session,
        order,
        "validation.address",
        "; ".join(address) or ("shipping address complete" if ships else "nothing to ship"),
        ok=not address,
    )
    with session.no_autoflush:  # reads the catalog only: the entries above go in one INSERT
        skus = await unknown_skus(session, order)
    if not [ln for ln in order.lines if ln.quantity > 0]:
        skus.append("order has no lines to fulfil")
    record(
        session,
        order,
        "validation.catalog",
        "; ".join(skus) or "every SKU is in the catalog",
        ok=not skus,
    )

    problems = address + skus
    if problems:
        reason = "; ".join(problems + ([payment] if payment else []))
        set_status(session, order, OrderStatus.NEEDS_ATTENTION, reason)
        open_exception(session, order, VALIDATION_FAILED, reason, problems=problems)
        return Verdict(OrderStatus.NEEDS_ATTENTION, problems)
    if payment:
        set_status(session, order, OrderStatus.ON_HOLD, payment)
        return Verdict(OrderStatus.ON_HOLD, [payment])
    set_status(session, order, OrderStatus.READY_TO_ROUTE, None)
    return Verdict(OrderStatus.READY_TO_ROUTE)
