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

from app import limits
from app.api.deps import READ_ONLY, provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page, keyset_page
from app.codes import check_country
from app.inputs import CountryCode, Input, ShortText
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine, OrderStatus
from app.purchasing import service as purchasing
from app.purchasing.models import POStatus, PurchaseOrder, PurchaseOrderLine
from app.purchasing.schemas import PurchaseOrderOut, SupplierLineOut
from app.routing import service as routing
from app.routing.engine import STRATEGIES
from app.routing.models import RoutingRule
from app.timeline.service import record

#: Simulations with more lines than this run the engine on a worker thread.
SIMULATE_ON_LOOP_LINES = 50

Strategy = Annotated[str, Meta(pattern="^(priority|cheapest|fastest)$")]
RuleName = Annotated[str, Meta(min_length=1, max_length=200)]
Position = Annotated[int, Meta(ge=limits.MIN_RULE_POSITION, le=limits.MAX_RULE_POSITION)]
MatchSkus = Annotated[list[ShortText], Meta(max_length=limits.MAX_LIST)]
MatchCountries = Annotated[list[CountryCode], Meta(max_length=limits.MAX_LIST)]


def _check_countries(countries: list[str] | None) -> None:
    for i, code in enumerate(countries or []):
        check_country(f"match_countries[{i}]", code)


class RuleIn(Input):
    name: RuleName
    strategy: Strategy = "priority"
    position: Position = 0
    match_skus: MatchSkus | None = None
    match_countries: MatchCountries | None = None
    active: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_countries(self.match_countries)


class RulePatch(Input):
    name: RuleName | None = None
    strategy: Strategy | None = None
    position: Position | None = None
    match_skus: MatchSkus | None = None
    match_countries: MatchCountries | None = None
    active: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_countries(self.match_countries)


class RuleOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    strategy: str
    position: int
    match_skus: list[str] | None
    match_countries: list[str] | None
    active: bool


class SimLine(Input):
    sku: ShortText
    quantity: Annotated[int, Meta(ge=1, le=limits.MAX_LINE_QUANTITY)]


class SimulateIn(Input):
    """Either an existing order (``order_id``) or a hypothetical one (``country`` + ``lines``)."""

    order_id: uuid.UUID | None = None
    country: CountryCode | None = None
    lines: Annotated[list[SimLine], Meta(max_length=limits.MAX_LINES)] = []

    def __post_init__(self) -> None:
        super().__post_init__()
        check_country("country", self.country)


class RerouteIn(Input):
    reason: Annotated[str, Meta(min_length=1, max_length=500)] = "rerouted by the merchant"
    #: Order line ids; default: every line not covered by an open purchase order.
    lines: Annotated[list[uuid.UUID], Meta(max_length=limits.MAX_LINES)] = []


class RoutingSettings(Input):
    """``auto_route``: send valid orders to suppliers at once (else they wait in
    ``ready_to_route``). ``consolidation_tolerance``: how much more (0.05 = 5 %) the merchant
    accepts to pay for fewer suppliers per order."""

    auto_route: bool = True
    consolidation_tolerance: Annotated[
        Decimal, Meta(description=f"from 0 to {limits.MAX_TOLERANCE}")
    ] = routing.DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        super().__post_init__()
        tolerance = self.consolidation_tolerance
        if not tolerance.is_finite() or not 0 <= tolerance <= limits.MAX_TOLERANCE:
            raise ValueError(
                f"consolidation_tolerance: between 0 and {limits.MAX_TOLERANCE} (0.05 = 5 %)"
            )


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
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/settings",
        summary="Routing settings: auto-routing and consolidation tolerance",
        **operation(
            "getRoutingSettings",
            "Whether valid orders go to suppliers at once (`auto_route`), and how much more you "
            "accept to pay for fewer suppliers per order (`consolidation_tolerance`).",
            api="merchant",
            invalid=None,
        ),
    )
    async def get_settings(self, merchant: NamedDependency[Merchant]) -> RoutingSettings:
        raw = (merchant.settings or {}).get("routing") or {}
        return RoutingSettings(
            auto_route=bool(raw.get("auto_route", True)),
            consolidation_tolerance=routing.tolerance_of(merchant),
        )

    @put(
        "/settings",
        summary="Change routing settings",
        **operation(
            "updateRoutingSettings",
            "Change auto-routing and the consolidation tolerance (0 to 1; 0.05 = 5 %).",
            api="merchant",
            method="PUT",
        ),
    )
    async def put_settings(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[RoutingSettings],
    ) -> RoutingSettings:
        tolerance = data.consolidation_tolerance  # bounds checked by RoutingSettings
        settings = dict(merchant.settings or {})
        settings["routing"] = {
            **(settings.get("routing") or {}),
            "auto_route": data.auto_route,
            "consolidation_tolerance": str(tolerance),
        }
        merchant.settings = settings
        await db_session.flush()
        return data

    @get(
        "/rules",
        summary="Routing rules, in the order they are tried",
        **operation(
            "listRoutingRules",
            "Your routing rules, in the order they are tried: the first active rule whose SKU "
            "patterns and destination countries match a line picks its strategy.",
            api="merchant",
            invalid=None,
        ),
    )
    async def list_rules(
        self, db_session: NamedDependency[AsyncSession], merchant: NamedDependency[Merchant]
    ) -> list[RuleOut]:
        rows = await db_session.scalars(
            select(RoutingRule)
            .where(RoutingRule.merchant_id == merchant.id)
            .order_by(RoutingRule.position, RoutingRule.created_at)
        )
        return [rule_out(r) for r in rows]

    @post(
        "/rules",
        status_code=201,
        summary="Add a routing rule",
        **operation(
            "createRoutingRule",
            "Add a rule: a strategy (`priority`, `cheapest` or `fastest`) for lines whose SKU "
            "matches `match_skus` shipping to `match_countries` (empty: any).",
            api="merchant",
            method="POST",
        ),
    )
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

    @patch(
        "/rules/{rule_id:uuid}",
        summary="Change a routing rule",
        **operation(
            "updateRoutingRule",
            "Change a routing rule; only the fields sent change.",
            api="merchant",
            method="PATCH",
            not_found="No routing rule with this id in your store.",
        ),
    )
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

    @delete(
        "/rules/{rule_id:uuid}",
        status_code=204,
        summary="Remove a routing rule",
        **operation(
            "deleteRoutingRule",
            "Remove a routing rule; orders already routed keep their suppliers.",
            api="merchant",
            method="DELETE",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No routing rule with this id in your store.",
        ),
    )
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
        opt={READ_ONLY: True},
        **operation(
            "simulateRouting",
            "Dry-run: route one of your orders (`order_id`) or a hypothetical one (`country` "
            "and `lines`) and see every candidate supplier with why it was picked or dropped. "
            "Nothing is sent or changed.",
            api="merchant",
            method="POST",
            not_found="`order_id` is not one of your orders.",
        ),
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
            raise ClientException(
                "order_id: give order_id, or country and lines", extra={"field": "order_id"}
            )
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
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="Purchase orders; dead_letter=true lists those that exhausted retries",
        **operation(
            "listPurchaseOrders",
            "The purchase orders sent to your suppliers, newest first, by status, order or "
            "supplier; `dead_letter=true` lists those whose placement gave up after its retries.",
            api="merchant",
        ),
    )
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
                raise ClientException(
                    f"status: one of {', '.join(POStatus.ALL)}", extra={"field": "status"}
                )
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

    @get(
        "/{po_id:uuid}",
        summary="One purchase order",
        **operation(
            "getPurchaseOrder",
            "One purchase order with its lines, placement attempts and last error.",
            api="merchant",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No purchase order with this id in your store.",
        ),
    )
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
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @post(
        "/{order_id:uuid}/reroute",
        status_code=200,
        summary="Route lines again: uncovered lines, or named lines taken back from their supplier",
        **operation(
            "rerouteOrder",
            "Route an order's lines again: by default every line no supplier covers; or the "
            "named `lines`, taken back from their supplier (its purchase order is cancelled "
            "when nothing is left on it).",
            api="merchant",
            method="POST",
            not_found="No order with this id in your store.",
            conflict="the order is not routed yet or is cancelled, every line is with a "
            "supplier, or a named line is already shipped or past acceptance",
        ),
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
            raise ClientException(
                f"lines: not lines of this order: {', '.join(unknown)}", extra={"field": "lines"}
            )
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
