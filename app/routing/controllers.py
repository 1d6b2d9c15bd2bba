"""Merchant API: routing rules, the routing dry-run, manual reroute, purchase orders and the
dead-letter view."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody
from msgspec import Meta
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.api.deps import provide_merchant
from app.api.pagination import DEFAULT_LIMIT, Page, keyset_page
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine, OrderStatus
from app.orders.service import record
from app.purchasing import service as purchasing
from app.purchasing.models import POStatus, PurchaseOrder, PurchaseOrderLine
from app.purchasing.schemas import PurchaseOrderOut, SupplierLineOut
from app.routing import service as routing
from app.routing.engine import STRATEGIES
from app.routing.models import RoutingRule

#: Most lines a simulated order may have: as many as a manual order.
MAX_SIMULATE_LINES = 500
#: Simulations with more lines than this run the engine on a worker thread.
SIMULATE_ON_LOOP_LINES = 50

Strategy = Annotated[str, Meta(pattern="^(priority|cheapest|fastest)$")]


class RuleIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    strategy: Strategy = "priority"
    position: int = 0
    match_skus: list[str] | None = None
    match_countries: list[Annotated[str, Meta(pattern="^[A-Z]{2}$")]] | None = None
    active: bool = True


class RulePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    strategy: Strategy | None = None
    position: int | None = None
    match_skus: list[str] | None = None
    match_countries: list[Annotated[str, Meta(pattern="^[A-Z]{2}$")]] | None = None
    active: bool | None = None


class RuleOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    strategy: str
    position: int
    match_skus: list[str] | None
    match_countries: list[str] | None
    active: bool


class SimLine(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, Meta(min_length=1)]
    quantity: Annotated[int, Meta(gt=0)]


class SimulateIn(msgspec.Struct, forbid_unknown_fields=True):
    """Either an existing order (``order_id``) or a hypothetical one (``country`` + ``lines``)."""

    order_id: uuid.UUID | None = None
    country: Annotated[str, Meta(pattern="^[A-Z]{2}$")] | None = None
    lines: list[SimLine] = []


class RerouteIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)] = "rerouted by the merchant"
    #: Order line ids; default: every line not covered by an open purchase order.
    lines: list[uuid.UUID] = []


class RoutingSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``auto_route``: send valid orders to suppliers at once (else they wait in
    ``ready_to_route``). ``consolidation_tolerance``: how much more (0.05 = 5 %) the merchant
    accepts to pay for fewer suppliers per order."""

    auto_route: bool = True
    consolidation_tolerance: Decimal = routing.DEFAULT_TOLERANCE


def rule_out(r: RoutingRule) -> RuleOut:
    return RuleOut(
        id=r.id,
        name=r.name,
        strategy=r.strategy,
        position=r.position,
        match_skus=r.match_skus,
        match_countries=r.match_countries,
        active=r.active,
    )


def po_out(po: PurchaseOrder) -> PurchaseOrderOut:
    return PurchaseOrderOut(
        id=po.id,
        order_id=po.order_id,
        supplier_id=po.supplier_id,
        number=po.number,
        status=po.status,
        currency=po.currency,
        total_cost=po.total_cost,
        supplier_reference=po.supplier_reference,
        attempts=po.attempts,
        last_error=po.last_error,
        placed_at=po.placed_at,
        accepted_at=po.accepted_at,
        dead_lettered_at=po.dead_lettered_at,
        lines=[SupplierLineOut.of(ln) for ln in po.lines],
        created_at=po.created_at,
    )


class RoutingController(Controller):
    path = "/api/v1/routing"
    tags = ["routing"]
    dependencies = {"merchant": Provide(provide_merchant)}

    @get("/settings", summary="Routing settings: auto-routing and consolidation tolerance")
    async def get_settings(self, merchant: NamedDependency[Merchant]) -> RoutingSettings:
        raw = (merchant.settings or {}).get("routing") or {}
        return RoutingSettings(
            auto_route=bool(raw.get("auto_route", True)),
            consolidation_tolerance=routing.tolerance_of(merchant),
        )

    @put("/settings", summary="Change routing settings")
    async def put_settings(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[RoutingSettings],
    ) -> RoutingSettings:
        tolerance = data.consolidation_tolerance
        if not tolerance.is_finite() or not Decimal("0") <= tolerance <= Decimal("1"):
            raise ClientException("consolidation_tolerance: between 0 and 1 (0.05 = 5 %)")
        settings = dict(merchant.settings or {})
        settings["routing"] = {
            **(settings.get("routing") or {}),
            "auto_route": data.auto_route,
            "consolidation_tolerance": str(tolerance),
        }
        merchant.settings = settings
        await db_session.flush()
        return data

    @get("/rules", summary="Routing rules, in the order they are tried")
    async def list_rules(
        self, db_session: NamedDependency[AsyncSession], merchant: NamedDependency[Merchant]
    ) -> list[RuleOut]:
        rows = await db_session.scalars(
            select(RoutingRule)
            .where(RoutingRule.merchant_id == merchant.id)
            .order_by(RoutingRule.position, RoutingRule.created_at)
        )
        return [rule_out(r) for r in rows]

    @post("/rules", status_code=201, summary="Add a routing rule")
    async def create_rule(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[RuleIn],
    ) -> RuleOut:
        rule = RoutingRule(merchant_id=merchant.id, **msgspec.structs.asdict(data))
        db_session.add(rule)
        await db_session.flush()
        return rule_out(rule)

    @patch("/rules/{rule_id:uuid}", summary="Change a routing rule")
    async def update_rule(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        rule_id: FromPath[uuid.UUID],
        data: JSONBody[RulePatch],
    ) -> RuleOut:
        rule = await self._rule(db_session, merchant, rule_id)
        for key, value in msgspec.structs.asdict(data).items():
            if value is not None:
                setattr(rule, key, value)
        await db_session.flush()
        return rule_out(rule)

    @delete("/rules/{rule_id:uuid}", status_code=204, summary="Remove a routing rule")
    async def delete_rule(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        rule_id: FromPath[uuid.UUID],
    ) -> None:
        await db_session.delete(await self._rule(db_session, merchant, rule_id))

    @staticmethod
    async def _rule(session: AsyncSession, merchant: Merchant, rule_id: uuid.UUID) -> RoutingRule:
        rule = await session.scalar(
            select(RoutingRule).where(
                RoutingRule.id == rule_id, RoutingRule.merchant_id == merchant.id
            )
        )
        if rule is None:
            raise NotFoundException(f"routing rule {rule_id} not found")
        return rule

    @post(
        "/simulate",
        status_code=200,
        summary="Dry-run the rules on a past or hypothetical order and explain every decision",
    )
    async def simulate(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[SimulateIn],
    ) -> dict[str, Any]:
        if data.order_id is not None:
            order = await db_session.scalar(
                select(Order)
                .where(Order.id == data.order_id, Order.merchant_id == merchant.id)
                .options(selectinload(Order.lines))
            )
            if order is None:
                raise NotFoundException(f"order {data.order_id} not found")
            lines = list(order.lines)
            country = (order.shipping_address or {}).get("country_code")
        elif data.lines and data.country:
            if len(data.lines) > MAX_SIMULATE_LINES:
                raise ClientException(
                    f"lines: at most {MAX_SIMULATE_LINES} lines (as a manual order), "
                    f"got {len(data.lines)}",
                    extra={"field": "lines"},
                )
            lines = [
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
                for i, ln in enumerate(data.lines)
            ]
            country = data.country
        else:
            raise ClientException("give order_id, or country and lines")
        inputs = await routing.plan_input(db_session, merchant, lines, country)
        # A dry-run: roll back whatever the session may hold, and end the transaction (on
        # SQLite, the database's write lock) before the decision is computed.
        await db_session.rollback()
        if len(inputs.requests) > SIMULATE_ON_LOOP_LINES:
            # CPU only, up to a few hundred ms for the largest: keep the event loop serving.
            plan = await asyncio.to_thread(inputs.decide)
        else:
            plan = inputs.decide()
        return {"country": country, "strategies": list(STRATEGIES), **plan.explain()}


class PurchaseOrderController(Controller):
    path = "/api/v1/purchase-orders"
    tags = ["purchase orders"]
    dependencies = {"merchant": Provide(provide_merchant)}

    @get("/", summary="Purchase orders; dead_letter=true lists those that exhausted retries")
    async def list_pos(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        status: FromQuery[str | None] = None,
        order_id: FromQuery[uuid.UUID | None] = None,
        supplier_id: FromQuery[uuid.UUID | None] = None,
        dead_letter: FromQuery[bool] = False,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[PurchaseOrderOut]:
        query = (
            select(PurchaseOrder)
            .where(PurchaseOrder.merchant_id == merchant.id)
            .options(selectinload(PurchaseOrder.lines))
        )
        if status:
            if status not in POStatus.ALL:
                raise ClientException(f"status: one of {', '.join(POStatus.ALL)}")
            query = query.where(PurchaseOrder.status == status)
        if order_id:
            query = query.where(PurchaseOrder.order_id == order_id)
        if supplier_id:
            query = query.where(PurchaseOrder.supplier_id == supplier_id)
        if dead_letter:
            query = query.where(PurchaseOrder.dead_lettered_at.is_not(None))
        return await keyset_page(
            db_session,
            query,
            PurchaseOrder.created_at,
            PurchaseOrder.id,
            cursor=cursor,
            limit=limit,
            shape=po_out,
        )

    @get("/{po_id:uuid}", summary="One purchase order")
    async def get_one(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        po_id: FromPath[uuid.UUID],
    ) -> PurchaseOrderOut:
        po = await purchasing.load(db_session, po_id)
        if po is None or po.merchant_id != merchant.id:
            raise NotFoundException(f"purchase order {po_id} not found")
        return po_out(po)


class RerouteController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]
    dependencies = {"merchant": Provide(provide_merchant)}

    @post(
        "/{order_id:uuid}/reroute",
        status_code=200,
        summary="Route lines again: uncovered lines, or named lines taken back from their supplier",
    )
    async def reroute(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
        data: JSONBody[RerouteIn],
    ) -> dict[str, Any]:
        order = await db_session.scalar(
            select(Order)
            .where(Order.id == order_id, Order.merchant_id == merchant.id)
            .options(selectinload(Order.lines))
        )
        if order is None:
            raise NotFoundException(f"order {order_id} not found")
        if order.status in OrderStatus.UNROUTED and order.status != OrderStatus.NEEDS_ATTENTION:
            raise HTTPException(
                status_code=409, detail=f"order is {order.status}: nothing to reroute yet"
            )
        if order.status == OrderStatus.CANCELLED:
            raise HTTPException(status_code=409, detail="order is cancelled")
        open_lines = list(
            (
                await db_session.execute(
                    select(PurchaseOrderLine, PurchaseOrder)
                    .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
                    .where(PurchaseOrder.order_id == order.id, PurchaseOrderLine.status == "open")
                )
            ).all()
        )
        covered = {pl.order_line_id: (pl, po) for pl, po in open_lines}
        known = {ln.id for ln in order.lines}
        unknown = [str(i) for i in data.lines if i not in known]
        if unknown:
            raise ClientException(f"lines: not lines of this order: {', '.join(unknown)}")
        wanted = data.lines or [ln.id for ln in order.lines if ln.id not in covered]
        if not wanted:
            raise HTTPException(status_code=409, detail="every line is with a supplier")
        record(db_session, order, "routing.manual", f"merchant asked to reroute: {data.reason}")
        taken_back: dict[uuid.UUID, list[PurchaseOrderLine]] = {}
        for line_id in wanted:
            if line_id in covered:
                pl, po = covered[line_id]
                if pl.quantity_shipped or po.status not in (
                    POStatus.PENDING,
                    POStatus.PLACED,
                    POStatus.ACCEPTED,
                ):
                    raise HTTPException(
                        status_code=409,
                        detail=f"line {line_id} is {po.status} at its supplier: cannot reroute",
                    )
                taken_back.setdefault(po.id, []).append(pl)
        for po_id, pls in taken_back.items():
            po = await purchasing.load(db_session, po_id)
            assert po is not None
            remaining = [ln for ln in po.lines if ln.status == "open" and ln not in pls]
            if not remaining:
                await purchasing.transition(db_session, po, POStatus.CANCELLED, data.reason)
            await purchasing.release_lines(db_session, po, pls, data.reason)
        free = [ln for ln in order.lines if ln.id in wanted and ln.id not in covered]
        plan = None
        if free:
            plan = await routing.route_lines(db_session, merchant, order, free)
        await db_session.flush()
        return {
            "order_id": str(order.id),
            "status": order.status,
            "rerouted_lines": [str(i) for i in wanted],
            "plan": plan.explain() if plan else None,
        }
