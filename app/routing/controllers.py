"""Merchant API: routing settings and rules, the routing dry-run, manual reroute."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from app import limits
from app.api.deps import READ_ONLY, provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.codes import check_country
from app.db import DbSession
from app.inputs import CountryCode, Input, ShortText
from app.merchants import service as merchants
from app.merchants.models import Merchant
from app.merchants.settings import RoutingSettings, settings_of
from app.purchasing.tasks import place_all
from app.routing import service as routing
from app.routing.engine import STRATEGIES
from app.routing.models import RoutingRule

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
        return settings_of(merchant).routing

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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[RoutingSettings],
    ) -> RoutingSettings:
        await merchants.change_settings(db_session, merchant, routing=data)
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
        self, db_session: NamedDependency[DbSession], merchant: NamedDependency[Merchant]
    ) -> list[RuleOut]:
        return [rule_out(r) for r in await routing.list_rules(db_session, merchant.id)]

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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[RuleIn],
    ) -> RuleOut:
        return rule_out(await routing.add_rule(db_session, merchant.id, data))

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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        rule_id: FromPath[uuid.UUID],
        data: JSONBody[RulePatch],
    ) -> RuleOut:
        return rule_out(await routing.change_rule(db_session, merchant.id, rule_id, data))

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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        rule_id: FromPath[uuid.UUID],
    ) -> None:
        await routing.remove_rule(db_session, merchant.id, rule_id)

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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[SimulateIn],
    ) -> dict[str, Any]:
        country, plan = await routing.simulate(
            db_session,
            merchant,
            order_id=data.order_id,
            country=data.country,
            lines=[routing.SimulatedLine(ln.sku, ln.quantity) for ln in data.lines],
        )
        return {"country": country, "strategies": list(STRATEGIES), **plan.explain()}


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
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
        data: JSONBody[RerouteIn],
    ) -> dict[str, Any]:
        done = await routing.reroute(db_session, merchant, order_id, data.lines, data.reason)
        await place_all(db_session, done.purchase_orders)
        return {
            "order_id": str(done.order.id),
            "status": done.order.status,
            "rerouted_lines": [str(i) for i in done.lines],
            "plan": done.plan.explain() if done.plan else None,
        }
