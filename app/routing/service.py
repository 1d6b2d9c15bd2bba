"""Routing decides and orchestrates: load the catalog, apply the merchant's rules, decide
(``engine.route``), have purchasing turn the decision into purchase orders, and take lines back
from a supplier to route them again (a rejection, a failed placement, the merchant's reroute).

Everything runs in the caller's transaction. The purchase orders created are returned: the
caller enqueues their placement (``app.purchasing.tasks.place_all``), and the placement
task's stale-work query is the safety net for one that was not.
"""

from __future__ import annotations

import asyncio
import fnmatch
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.events.models import EventType
from app.events.service import publish
from app.exceptions.service import open_exception
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant
from app.merchants.service import get_merchant
from app.merchants.settings import parse as parse_settings
from app.merchants.settings import settings_of
from app.orders import service as orders
from app.orders.models import Order, OrderLine, OrderStatus
from app.purchasing import service as purchasing
from app.purchasing.models import POStatus, PurchaseOrder, PurchaseOrderLine
from app.routing.engine import LineRequest, Offer, RoutingPlan, ShippingRate, route
from app.routing.models import LineExclusion, RoutingRule
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.service import record, set_status

_OFFERS_PARTITION = 1000


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
    *,
    fresh: bool = False,
) -> PlanInput:
    """``fresh``: the lines were created in this transaction, so no exclusion names them."""
    rules = await load_rules(session, merchant.id)
    requests = [
        LineRequest(ln.id, ln.sku, ln.quantity, strategy_for(rules, ln.sku, country))
        for ln in lines
        if ln.quantity > 0
    ]
    offers = await load_offers(session, merchant.id, (ln.sku or "" for ln in lines))
    exclusions = {} if fresh else await load_exclusions(session, (ln.id for ln in lines))
    tolerance = settings_of(merchant).routing.consolidation_tolerance
    return PlanInput(requests, country, offers, tolerance, exclusions)


async def plan(
    session: AsyncSession,
    merchant: Merchant,
    lines: Sequence[OrderLine],
    country: str | None,
    *,
    fresh: bool = False,
) -> RoutingPlan:
    """The decision for these lines, without changing anything."""
    return (await plan_input(session, merchant, lines, country, fresh=fresh)).decide()


def _country(order: Order) -> str | None:
    return (order.shipping_address or {}).get("country_code")


@dataclass
class Routed:
    """A routing decision carried out: the plan, and the purchase orders it created (to be
    placed once the transaction commits)."""

    plan: RoutingPlan
    purchase_orders: list[PurchaseOrder]


async def route_lines(
    session: AsyncSession,
    merchant: Merchant,
    order: Order,
    lines: Sequence[OrderLine],
    *,
    fresh: bool = False,
) -> Routed:
    """Decide, have purchasing create the purchase orders (reserving stock), open an
    exceptions-queue entry per unroutable line and bring the order's status up to date.

    ``fresh``: the order and ``lines`` (all of its lines) were created in this transaction: no
    exclusion, purchase order or earlier routing exists for them, so none is looked up."""
    decided = await plan(session, merchant, lines, _country(order), fresh=fresh)
    created = await purchasing.create_from_plan(session, order, decided, fresh=fresh)
    record(
        session,
        order,
        "routing.decided",
        f"{len(decided.routed)} line(s) to {len(decided.by_supplier())} supplier(s), "
        f"{len(decided.unroutable)} unroutable; {decided.consolidation}",
        **decided.explain(),
    )
    by_id = {ln.id: ln for ln in lines}
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
    if fresh:
        # What the queries below would find: these lines, covered by what was just decided.
        await refresh_order_status(
            session,
            order,
            lines=[ln for ln in lines if ln.quantity > 0],
            covered={d.line_id for d in decided.routed},
        )
    else:
        # The purchase orders just created may not be flushed yet (a caller writing in one
        # flush at the end, ``validate_and_route``): the lines they take count as covered.
        covered = await purchasing.covered_line_ids(session, order.id)
        await refresh_order_status(
            session, order, covered=covered | {d.line_id for d in decided.routed}
        )
    return Routed(decided, created)


async def refresh_order_status(
    session: AsyncSession,
    order: Order,
    *,
    lines: Sequence[OrderLine] | None = None,
    covered: set[uuid.UUID] | None = None,
) -> None:
    """routed / partially_routed / needs_attention from where the lines are now (``lines``
    with a quantity and the ``covered`` ones, when the caller knows them)."""
    if lines is None:
        lines = list(
            (
                await session.scalars(
                    select(OrderLine).where(OrderLine.order_id == order.id, OrderLine.quantity > 0)
                )
            ).all()
        )
    if covered is None:
        covered = await purchasing.covered_line_ids(session, order.id)
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
    if status == OrderStatus.ROUTED:
        await publish(session, order, EventType.ORDER_ROUTED, key=f"order.routed:{order.id}")


async def exclude(
    session: AsyncSession, line_ids: Iterable[uuid.UUID], supplier_id: uuid.UUID, reason: str
) -> None:
    """Never route these lines to this supplier again."""
    wanted = set(line_ids)
    if not wanted:
        return
    known = set(
        (
            await session.scalars(
                select(LineExclusion.order_line_id).where(
                    LineExclusion.order_line_id.in_(wanted),
                    LineExclusion.supplier_id == supplier_id,
                )
            )
        ).all()
    )
    now = utcnow()
    session.add_all(
        LineExclusion(order_line_id=line_id, supplier_id=supplier_id, reason=reason, created_at=now)
        for line_id in sorted(wanted - known)
    )
    await session.flush()


async def take_back(
    session: AsyncSession, po: PurchaseOrder, lines: Sequence[PurchaseOrderLine], reason: str
) -> list[PurchaseOrder]:
    """Take lines back from their supplier (purchasing releases them), never send them there
    again, and route them to the next candidate. Returns the purchase orders created."""
    await purchasing.release_lines(session, po, lines)
    await exclude(session, [ln.order_line_id for ln in lines], po.supplier_id, reason)
    order = await purchasing.order_of(session, po)
    if order.cancel_requested_at is not None or order.status == OrderStatus.CANCELLED:
        # Being cancelled: lines a supplier gives back go nowhere else.
        return []
    merchant = await get_merchant(session, order.merchant_id)
    assert merchant is not None
    order_lines = list(
        (
            await session.scalars(
                select(OrderLine).where(OrderLine.id.in_([ln.order_line_id for ln in lines]))
            )
        ).all()
    )
    record(
        session,
        order,
        "routing.reroute",
        f"rerouting {', '.join(f'{ln.quantity} x {ln.sku}' for ln in lines)} "
        f"away from purchase order {po.number}: {reason}",
        purchase_order_id=str(po.id),
    )
    return (await route_lines(session, merchant, order, order_lines)).purchase_orders


async def supplier_rejected(
    session: AsyncSession, po: PurchaseOrder, reason: str, skus: Sequence[str] | None
) -> list[PurchaseOrder]:
    """The supplier refuses some lines (all without ``skus``): purchasing records the refusal,
    routing sends the lines to the next candidate. Returns the purchase orders created."""
    chosen = await purchasing.reject(session, po, reason, skus)
    return await take_back(session, po, chosen, f"rejected by supplier: {reason}")


async def placement_failed(
    session: AsyncSession, po: PurchaseOrder, reason: str
) -> list[PurchaseOrder]:
    """The purchase order failed for good (``failed`` already): route its lines elsewhere."""
    return await take_back(session, po, [ln for ln in po.lines if ln.status == "open"], reason)


async def unrouted(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Valid orders of active merchants with auto-route on, still waiting to be routed (the
    ``order.route`` task's stale work)."""
    rows = (
        await session.execute(
            select(Order.id, Merchant.settings)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .where(
                Order.status == OrderStatus.READY_TO_ROUTE,
                Order.updated_at < window.cutoff,
                Merchant.status == "active",
            )
            .limit(window.limit)
        )
    ).all()
    return [order_id for order_id, raw in rows if parse_settings(raw).routing.auto_route]


async def route_ready_order(session: AsyncSession, order_id: uuid.UUID) -> Routed | None:
    """Route a ``ready_to_route`` order of an active merchant; anything else: nothing to do."""
    order = await orders.load_for_change(session, order_id)
    if order is None or order.status != OrderStatus.READY_TO_ROUTE:
        return None
    merchant = await get_merchant(session, order.merchant_id)
    if merchant is None or merchant.status != "active":
        return None
    return await route_lines(session, merchant, order, order.lines)


@dataclass
class Rerouted:
    order: Order
    lines: list[uuid.UUID]
    plan: RoutingPlan | None
    purchase_orders: list[PurchaseOrder]


async def reroute(
    session: AsyncSession,
    merchant: Merchant,
    order_id: uuid.UUID,
    line_ids: Sequence[uuid.UUID],
    reason: str,
) -> Rerouted:
    """The merchant routes lines again: the named ones, taken back from their supplier (whose
    purchase order is cancelled when nothing is left on it), or every line no supplier covers."""
    order = await orders.get_order(session, merchant.id, order_id, timeline=False)
    if order is None:
        raise NotFound(f"order {order_id} not found")
    if order.status in OrderStatus.UNROUTED and order.status != OrderStatus.NEEDS_ATTENTION:
        raise Conflict(f"order is {order.status}: nothing to reroute yet")
    if order.status == OrderStatus.CANCELLED:
        raise Conflict("order is cancelled")
    covered = await purchasing.open_lines_of_order(session, order.id)
    known = {ln.id for ln in order.lines}
    unknown = [str(i) for i in line_ids if i not in known]
    if unknown:
        raise InvalidInput(f"not lines of this order: {', '.join(unknown)}", field="lines")
    wanted = list(line_ids) or [ln.id for ln in order.lines if ln.id not in covered]
    if not wanted:
        raise Conflict("every line is with a supplier")
    record(session, order, "routing.manual", f"merchant asked to reroute: {reason}")
    taken_back: dict[uuid.UUID, list[PurchaseOrderLine]] = {}
    for line_id in wanted:
        if line_id in covered:
            pl, po = covered[line_id]
            if pl.quantity_shipped or po.status not in purchasing.REVOCABLE:
                raise Conflict(f"line {line_id} is {po.status} at its supplier: cannot reroute")
            taken_back.setdefault(po.id, []).append(pl)
    created: list[PurchaseOrder] = []
    for po_id, pls in taken_back.items():
        held = await purchasing.load(session, po_id)
        assert held is not None
        remaining = [ln for ln in held.lines if ln.status == "open" and ln not in pls]
        if not remaining:
            await purchasing.transition(session, held, POStatus.CANCELLED, reason)
        created += await take_back(session, held, pls, reason)
    free = [ln for ln in order.lines if ln.id in wanted and ln.id not in covered]
    routed = await route_lines(session, merchant, order, free) if free else None
    await session.flush()
    return Rerouted(
        order,
        wanted,
        routed.plan if routed else None,
        created + (routed.purchase_orders if routed else []),
    )


# -- rules --------------------------------------------------------------------------------------


async def list_rules(session: AsyncSession, merchant_id: uuid.UUID) -> list[RoutingRule]:
    """Every rule of the merchant, active or not, in the order they are tried."""
    return list(
        (
            await session.scalars(
                select(RoutingRule)
                .where(RoutingRule.merchant_id == merchant_id)
                .order_by(RoutingRule.position, RoutingRule.created_at)
            )
        ).all()
    )


async def get_rule(
    session: AsyncSession, merchant_id: uuid.UUID, rule_id: uuid.UUID
) -> RoutingRule:
    rule = await session.scalar(
        select(RoutingRule).where(RoutingRule.id == rule_id, RoutingRule.merchant_id == merchant_id)
    )
    if rule is None:
        raise NotFound(f"routing rule {rule_id} not found")
    return rule


async def add_rule(
    session: AsyncSession, merchant_id: uuid.UUID, fields: msgspec.Struct
) -> RoutingRule:
    rule = RoutingRule(merchant_id=merchant_id, **msgspec.structs.asdict(fields))
    session.add(rule)
    await session.flush()
    return rule


async def change_rule(
    session: AsyncSession, merchant_id: uuid.UUID, rule_id: uuid.UUID, patch: msgspec.Struct
) -> RoutingRule:
    """Change the fields given (not ``None``) of one of the merchant's rules."""
    rule = await get_rule(session, merchant_id, rule_id)
    for key, value in msgspec.structs.asdict(patch).items():
        if value is not None:
            setattr(rule, key, value)
    await session.flush()
    return rule


async def remove_rule(session: AsyncSession, merchant_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    await session.delete(await get_rule(session, merchant_id, rule_id))


# -- dry run ------------------------------------------------------------------------------------

#: Simulations with more lines than this run the engine on a worker thread.
SIMULATE_ON_LOOP_LINES = 50


@dataclass(frozen=True)
class SimulatedLine:
    sku: str
    quantity: int


async def simulate(
    session: AsyncSession,
    merchant: Merchant,
    *,
    order_id: uuid.UUID | None,
    country: str | None,
    lines: Sequence[SimulatedLine],
) -> tuple[str | None, RoutingPlan]:
    """The decision for one of the merchant's orders, or a hypothetical one (country and
    lines), changing nothing. Returns the destination country and the plan.

    The session is rolled back (on SQLite: the database's write lock released) before the
    decision is computed; a big one runs on a worker thread to keep the event loop serving.
    """
    if order_id is not None:
        order = await orders.get_order(session, merchant.id, order_id, timeline=False)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        order_lines = list(order.lines)
        country = _country(order)
    elif lines and country:
        order_lines = [
            OrderLine(
                id=uuid.uuid4(),
                order_id=uuid.uuid4(),
                merchant_id=merchant.id,
                position=i,
                sku=ln.sku,
                title=ln.sku,
                quantity=ln.quantity,
                price=0,
            )
            for i, ln in enumerate(lines)
        ]
    else:
        raise InvalidInput("give order_id, or country and lines", field="order_id")
    inputs = await plan_input(session, merchant, order_lines, country)
    await session.rollback()
    if len(inputs.requests) > SIMULATE_ON_LOOP_LINES:
        # CPU only, up to a few hundred ms for the largest.
        return country, await asyncio.to_thread(inputs.decide)
    return country, inputs.decide()
