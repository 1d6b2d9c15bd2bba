"""Routing an order: load the catalog, apply the merchant's rules, decide (``engine.route``),
then turn the decision into purchase orders with reserved stock, in the caller's transaction."""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow, uuid7
from app.jobs.outbox import enqueue
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine, OrderStatus
from app.orders.service import open_exception, record, set_status
from app.purchasing.models import LineExclusion, POStatus, PurchaseOrder, PurchaseOrderLine
from app.routing.engine import LineRequest, Offer, RoutingPlan, ShippingRate, route
from app.routing.models import RoutingRule
from app.suppliers.models import Supplier, SupplierProduct

DEFAULT_TOLERANCE = Decimal("0.05")
_OFFERS_PARTITION = 1000


class StockConflict(Exception):
    """Stock moved between the decision and the reservation: route again."""

    retryable = True


def tolerance_of(merchant: Merchant | None) -> Decimal:
    raw = (
        ((merchant.settings if merchant else {}) or {})
        .get("routing", {})
        .get("consolidation_tolerance")
    )
    try:
        return Decimal(str(raw)) if raw is not None else DEFAULT_TOLERANCE
    except InvalidOperation:
        return DEFAULT_TOLERANCE


async def load_offers(
    session: AsyncSession, merchant_id: uuid.UUID, skus: Iterable[str]
) -> list[Offer]:
    wanted = sorted({s for s in skus if s})
    if not wanted:
        return []
    # Columns, not ORM objects, and each supplier once: a big catalog loads thousands of
    # offers per decision.
    suppliers = {
        row.id: (
            row.name,
            row.status == "active",
            {
                code: ShippingRate(
                    Decimal(str(r.get("first_item", "0"))),
                    Decimal(str(r.get("additional_item", "0"))),
                )
                for code, r in (row.shipping_rates or {}).items()
            },
        )
        for row in (
            await session.execute(
                select(Supplier.id, Supplier.name, Supplier.status, Supplier.shipping_rates).where(
                    Supplier.merchant_id == merchant_id
                )
            )
        ).all()
    }
    query = select(
        SupplierProduct.supplier_id,
        SupplierProduct.sku,
        SupplierProduct.supplier_sku,
        SupplierProduct.unit_cost,
        SupplierProduct.currency,
        SupplierProduct.stock,
        SupplierProduct.lead_time_days,
        SupplierProduct.ships_to,
        SupplierProduct.priority,
    ).where(SupplierProduct.merchant_id == merchant_id, SupplierProduct.sku.in_(wanted))
    offers: list[Offer] = []
    # Streamed in partitions: the event loop serves other requests between them.
    result = await session.stream(query)
    async for partition in result.partitions(_OFFERS_PARTITION):
        _add_offers(offers, partition, suppliers)
    return offers


def _add_offers(
    offers: list[Offer],
    rows: Sequence[Any],
    suppliers: dict[uuid.UUID, tuple[str, bool, dict[str, ShippingRate]]],
) -> None:
    for row in rows:
        supplier = suppliers.get(row.supplier_id)
        if supplier is None:  # another merchant's supplier: never (kept as the join did)
            continue
        name, active, rates = supplier
        offers.append(
            Offer(
                supplier_id=row.supplier_id,
                supplier_name=name,
                supplier_active=active,
                sku=row.sku,
                supplier_sku=row.supplier_sku,
                unit_cost=row.unit_cost,
                currency=row.currency,
                stock=row.stock,
                lead_time_days=row.lead_time_days,
                ships_to=tuple(row.ships_to or ["*"]),
                priority=row.priority,
                shipping=rates,
            )
        )


async def load_rules(session: AsyncSession, merchant_id: uuid.UUID) -> list[RoutingRule]:
    return list(
        (
            await session.scalars(
                select(RoutingRule)
                .where(RoutingRule.merchant_id == merchant_id, RoutingRule.active.is_(True))
                .order_by(RoutingRule.position, RoutingRule.created_at)
            )
        ).all()
    )


def strategy_for(rules: Sequence[RoutingRule], sku: str | None, country: str | None) -> str:
    for rule in rules:
        if rule.match_countries and (country or "").upper() not in rule.match_countries:
            continue
        if rule.match_skus and not any(
            fnmatch.fnmatchcase(sku or "", str(p)) for p in rule.match_skus
        ):
            continue
        return rule.strategy
    return "priority"


async def load_exclusions(
    session: AsyncSession, line_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, set[uuid.UUID]]:
    ids = list(line_ids)
    out: dict[uuid.UUID, set[uuid.UUID]] = {}
    if not ids:
        return out
    for line_id, supplier_id in (
        await session.execute(
            select(LineExclusion.order_line_id, LineExclusion.supplier_id).where(
                LineExclusion.order_line_id.in_(ids)
            )
        )
    ).all():
        out.setdefault(line_id, set()).add(supplier_id)
    return out


@dataclass(frozen=True)
class PlanInput:
    """Everything ``engine.route`` needs for one decision, loaded from the database."""

    requests: list[LineRequest]
    country: str | None
    offers: list[Offer]
    tolerance: Decimal
    exclusions: dict[uuid.UUID, set[uuid.UUID]]

    def decide(self) -> RoutingPlan:
        """The decision (pure, CPU only: may run on a worker thread)."""
        return route(
            self.requests,
            self.country,
            self.offers,
            tolerance=self.tolerance,
            exclusions=self.exclusions,
        )


async def plan_input(
    session: AsyncSession,
    merchant: Merchant,
    lines: Sequence[OrderLine],
    country: str | None,
) -> PlanInput:
    rules = await load_rules(session, merchant.id)
    requests = [
        LineRequest(ln.id, ln.sku, ln.quantity, strategy_for(rules, ln.sku, country))
        for ln in lines
        if ln.quantity > 0
    ]
    offers = await load_offers(session, merchant.id, (ln.sku or "" for ln in lines))
    exclusions = await load_exclusions(session, (ln.id for ln in lines))
    return PlanInput(requests, country, offers, tolerance_of(merchant), exclusions)


async def plan(
    session: AsyncSession,
    merchant: Merchant,
    lines: Sequence[OrderLine],
    country: str | None,
) -> RoutingPlan:
    """The decision for these lines, without changing anything."""
    return (await plan_input(session, merchant, lines, country)).decide()


def _country(order: Order) -> str | None:
    return (order.shipping_address or {}).get("country_code")


async def route_lines(
    session: AsyncSession, merchant: Merchant, order: Order, lines: Sequence[OrderLine]
) -> RoutingPlan:
    """Decide, reserve stock, create purchase orders and enqueue their placement."""
    decided = await plan(session, merchant, lines, _country(order))
    existing = int(
        await session.scalar(
            select(func.count())
            .select_from(PurchaseOrder)
            .where(PurchaseOrder.order_id == order.id)
        )
        or 0
    )
    by_id = {ln.id: ln for ln in lines}
    created: list[PurchaseOrder] = []
    reservations: dict[tuple[uuid.UUID, str], int] = {}
    names: dict[tuple[uuid.UUID, str], str] = {}
    for n, (supplier_id, decisions) in enumerate(sorted(decided.by_supplier().items()), start=1):
        po_id = uuid7()
        po_lines = []
        total = Decimal("0")
        for position, d in enumerate(decisions):
            assert d.offer is not None
            key = (supplier_id, d.offer.sku)
            reservations[key] = reservations.get(key, 0) + d.quantity
            names[key] = d.offer.supplier_name
            total += d.offer.unit_cost * d.quantity
            po_lines.append(
                PurchaseOrderLine(
                    purchase_order_id=po_id,
                    order_line_id=d.line_id,
                    merchant_id=order.merchant_id,
                    position=position,
                    sku=d.offer.sku,
                    supplier_sku=d.offer.supplier_sku,
                    quantity=d.quantity,
                    unit_cost=d.offer.unit_cost,
                )
            )
        first = decisions[0].offer
        assert first is not None
        po = PurchaseOrder(
            id=po_id,
            merchant_id=order.merchant_id,
            order_id=order.id,
            supplier_id=supplier_id,
            number=f"{order.name.lstrip('#')}-{existing + n}",
            status=POStatus.PENDING,
            idempotency_key=f"dropship-po-{po_id}",
            currency=first.currency,
            total_cost=total,
            ship_to=_ship_to(order),
            shipping_method=order.shipping_method,
        )
        session.add(po)
        await session.flush()
        session.add_all(po_lines)
        created.append(po)
        record(
            session,
            order,
            "purchase_order.created",
            f"purchase order {po.number} for {first.supplier_name}: "
            + ", ".join(f"{pl.quantity} x {pl.sku}" for pl in po_lines),
            purchase_order_id=str(po.id),
            supplier_id=str(supplier_id),
        )
    await session.flush()
    # Imported here: app.purchasing.tasks -> app.purchasing.service -> this module (a cycle).
    from app.purchasing.tasks import place

    for po in created:
        await enqueue(session, place, po.id)
    # Reserve stock last and in key order: the hot rows of popular SKUs stay locked only for
    # the end of the transaction, and concurrent routings lock them in the same order.
    for (supplier_id, sku), quantity in sorted(
        reservations.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
    ):
        reserved = await session.execute(
            update(SupplierProduct)
            .where(
                SupplierProduct.supplier_id == supplier_id,
                SupplierProduct.sku == sku,
                SupplierProduct.stock >= quantity,
            )
            .values(stock=SupplierProduct.stock - quantity)
        )
        if getattr(reserved, "rowcount", 1) != 1:
            raise StockConflict(f"stock of {sku} at {names[(supplier_id, sku)]} changed")

    record(
        session,
        order,
        "routing.decided",
        f"{len(decided.routed)} line(s) to {len(decided.by_supplier())} supplier(s), "
        f"{len(decided.unroutable)} unroutable; {decided.consolidation}",
        **decided.explain(),
    )
    for d in decided.unroutable:
        line = by_id.get(d.line_id)
        label = f"{d.quantity} x {d.sku or (line.title if line else '?')}"
        open_exception(
            session,
            order,
            "unroutable_line",
            f"{label}: {d.reason}",
            line_id=str(d.line_id),
            candidates=[c.__dict__ for c in d.candidates],
        )
    await refresh_order_status(session, order)
    return decided


async def refresh_order_status(session: AsyncSession, order: Order) -> None:
    """routed / partially_routed / needs_attention from where the lines are now."""
    lines = list(
        (
            await session.scalars(
                select(OrderLine).where(OrderLine.order_id == order.id, OrderLine.quantity > 0)
            )
        ).all()
    )
    covered = set(
        (
            await session.scalars(
                select(PurchaseOrderLine.order_line_id)
                .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
                .where(
                    PurchaseOrder.order_id == order.id,
                    PurchaseOrderLine.status == "open",
                    PurchaseOrder.status.in_(
                        [*POStatus.OPEN, POStatus.SHIPPED, POStatus.DELIVERED]
                    ),
                )
            )
        ).all()
    )
    missing = [ln for ln in lines if ln.id not in covered]
    if not missing:
        status, reason = OrderStatus.ROUTED, None
    elif len(missing) < len(lines):
        status = OrderStatus.PARTIALLY_ROUTED
        reason = "no supplier for: " + ", ".join(ln.sku or ln.title for ln in missing)
    else:
        status = OrderStatus.NEEDS_ATTENTION
        reason = "no supplier for any line"
    if (status, reason) != (order.status, order.status_reason):
        set_status(session, order, status, reason)


def _ship_to(order: Order) -> dict[str, Any]:
    addr = order.shipping_address or {}
    keys = ("name", "company", "address1", "address2", "city", "province_code", "zip")
    out = {k: addr.get(k) for k in keys}
    out["country_code"] = addr.get("country_code")
    out["phone"] = addr.get("phone")
    return out


async def exclude(
    session: AsyncSession, line_ids: Iterable[uuid.UUID], supplier_id: uuid.UUID, reason: str
) -> None:
    for line_id in line_ids:
        exists = await session.scalar(
            select(LineExclusion.id).where(
                LineExclusion.order_line_id == line_id, LineExclusion.supplier_id == supplier_id
            )
        )
        if exists is None:
            session.add(
                LineExclusion(
                    order_line_id=line_id,
                    supplier_id=supplier_id,
                    reason=reason,
                    created_at=utcnow(),
                )
            )
    await session.flush()
