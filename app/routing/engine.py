"""The routing decision, as a pure function: no database, no clock, fully explainable.

Given an order's lines, its destination and every supplier offer for its SKUs, pick a supplier
per line:

1. Constraints drop offers: supplier inactive, does not ship to the destination, not enough
   stock for the quantity (stock already taken by earlier lines of the same order counts), or
   excluded for this line (it rejected or failed it before).
2. The line's strategy ranks what is left: ``priority`` (the merchant's 1 = first choice, then
   cost), ``cheapest`` (landed cost: unit cost times quantity plus the supplier's shipping rate
   to the destination), ``fastest`` (lead time, then cost).
3. Consolidation: if fewer suppliers can take all routable lines for a landed cost within the
   merchant's tolerance of the per-line choice, fewer suppliers win (one parcel is cheaper to
   handle and arrives together).

Every candidate of every line comes back with the reason it was picked or dropped; the same
explanation is stored on the order's timeline when the decision is real.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

STRATEGIES = ("priority", "cheapest", "fastest")
ZERO = Decimal("0")
#: Upper bound on suppliers considered for consolidation (combinations grow fast).
MAX_CONSOLIDATION_SUPPLIERS = 12


@dataclass(frozen=True)
class ShippingRate:
    """What a supplier charges to ship one of our purchase orders to a country."""

    first_item: Decimal = ZERO
    additional_item: Decimal = ZERO

    def cost(self, items: int) -> Decimal:
        if items <= 0:
            return ZERO
        return self.first_item + self.additional_item * (items - 1)


@dataclass(frozen=True)
class Offer:
    supplier_id: uuid.UUID
    supplier_name: str
    supplier_active: bool
    sku: str
    supplier_sku: str
    unit_cost: Decimal
    currency: str
    stock: int
    lead_time_days: int
    ships_to: tuple[str, ...]
    priority: int
    #: country code (or ``*``) -> rate
    shipping: Mapping[str, ShippingRate] = field(default_factory=dict)

    def ships(self, country: str) -> bool:
        return "*" in self.ships_to or country in self.ships_to

    def rate(self, country: str) -> ShippingRate:
        return self.shipping.get(country) or self.shipping.get("*") or ShippingRate()


@dataclass(frozen=True)
class LineRequest:
    line_id: uuid.UUID
    sku: str | None
    quantity: int
    strategy: str = "priority"


@dataclass
class CandidateVerdict:
    supplier_id: str
    supplier_name: str
    eligible: bool
    reason: str
    unit_cost: str | None = None
    landed_cost: str | None = None
    lead_time_days: int | None = None
    priority: int | None = None
    picked: bool = False


@dataclass
class LineDecision:
    line_id: uuid.UUID
    sku: str | None
    quantity: int
    strategy: str
    offer: Offer | None
    reason: str
    candidates: list[CandidateVerdict]

    def explain(self) -> dict[str, Any]:
        return {
            "line_id": str(self.line_id),
            "sku": self.sku,
            "quantity": self.quantity,
            "strategy": self.strategy,
            "supplier_id": str(self.offer.supplier_id) if self.offer else None,
            "supplier": self.offer.supplier_name if self.offer else None,
            "reason": self.reason,
            "candidates": [c.__dict__ for c in self.candidates],
        }


@dataclass
class RoutingPlan:
    lines: list[LineDecision]
    consolidation: str
    landed_cost: Decimal

    @property
    def routed(self) -> list[LineDecision]:
        return [d for d in self.lines if d.offer is not None]

    @property
    def unroutable(self) -> list[LineDecision]:
        return [d for d in self.lines if d.offer is None]

    def by_supplier(self) -> dict[uuid.UUID, list[LineDecision]]:
        groups: dict[uuid.UUID, list[LineDecision]] = defaultdict(list)
        for d in self.routed:
            assert d.offer is not None
            groups[d.offer.supplier_id].append(d)
        return dict(groups)

    def explain(self) -> dict[str, Any]:
        return {
            "lines": [d.explain() for d in self.lines],
            "consolidation": self.consolidation,
            "landed_cost": str(self.landed_cost),
            "suppliers": len(self.by_supplier()),
        }


def _rank_key(strategy: str, offer: Offer, qty: int, country: str) -> tuple[Any, ...]:
    landed = offer.unit_cost * qty + offer.rate(country).cost(qty)
    if strategy == "cheapest":
        return (landed, offer.priority, offer.lead_time_days, str(offer.supplier_id))
    if strategy == "fastest":
        return (offer.lead_time_days, landed, offer.priority, str(offer.supplier_id))
    return (offer.priority, landed, offer.lead_time_days, str(offer.supplier_id))


def plan_cost(assignment: Iterable[tuple[LineRequest, Offer]], country: str) -> Decimal:
    """Landed cost of an assignment: goods plus one shipping charge per supplier parcel."""
    goods = ZERO
    items: dict[uuid.UUID, int] = defaultdict(int)
    rates: dict[uuid.UUID, ShippingRate] = {}
    for line, offer in assignment:
        goods += offer.unit_cost * line.quantity
        items[offer.supplier_id] += line.quantity
        rates[offer.supplier_id] = offer.rate(country)
    return goods + sum((rates[s].cost(n) for s, n in items.items()), ZERO)


def route(
    lines: Sequence[LineRequest],
    country: str | None,
    offers: Iterable[Offer],
    *,
    tolerance: Decimal = ZERO,
    exclusions: Mapping[uuid.UUID, set[uuid.UUID]] | None = None,
) -> RoutingPlan:
    """Decide a supplier for each line; see the module docstring for the rules."""
    exclusions = exclusions or {}
    dest = (country or "").upper()
    by_sku: dict[str, list[Offer]] = defaultdict(list)
    for offer in offers:
        by_sku[offer.sku].append(offer)
    remaining: dict[tuple[uuid.UUID, str], int] = {
        (o.supplier_id, o.sku): o.stock for group in by_sku.values() for o in group
    }

    decisions: list[LineDecision] = []
    eligible_sets: dict[uuid.UUID, list[Offer]] = {}
    for line in lines:
        strategy = line.strategy if line.strategy in STRATEGIES else "priority"
        verdicts: list[CandidateVerdict] = []
        eligible: list[Offer] = []
        if not line.sku:
            decisions.append(
                LineDecision(line.line_id, line.sku, line.quantity, strategy, None, "no SKU", [])
            )
            continue
        for offer in sorted(by_sku.get(line.sku, []), key=lambda o: o.supplier_name):
            reason = None
            if not offer.supplier_active:
                reason = "supplier inactive"
            elif offer.supplier_id in exclusions.get(line.line_id, set()):
                reason = "supplier already rejected or failed this line"
            elif not dest or not offer.ships(dest):
                reason = f"does not ship to {dest or 'an unknown country'}"
            elif remaining[(offer.supplier_id, offer.sku)] < line.quantity:
                reason = (
                    f"stock {remaining[(offer.supplier_id, offer.sku)]} < quantity {line.quantity}"
                )
            landed = offer.unit_cost * line.quantity + offer.rate(dest).cost(line.quantity)
            verdicts.append(
                CandidateVerdict(
                    supplier_id=str(offer.supplier_id),
                    supplier_name=offer.supplier_name,
                    eligible=reason is None,
                    reason=reason or "eligible",
                    unit_cost=str(offer.unit_cost),
                    landed_cost=str(landed),
                    lead_time_days=offer.lead_time_days,
                    priority=offer.priority,
                )
            )
            if reason is None:
                eligible.append(offer)
        if not eligible:
            why = "no supplier offers this SKU" if not verdicts else "no eligible supplier"
            decisions.append(
                LineDecision(line.line_id, line.sku, line.quantity, strategy, None, why, verdicts)
            )
            continue
        eligible.sort(key=lambda o: _rank_key(strategy, o, line.quantity, dest))
        best = eligible[0]
        remaining[(best.supplier_id, best.sku)] -= line.quantity
        eligible_sets[line.line_id] = eligible
        decisions.append(
            LineDecision(
                line.line_id,
                line.sku,
                line.quantity,
                strategy,
                best,
                f"best by {strategy}",
                verdicts,
            )
        )

    routed = [(d, _req(lines, d.line_id)) for d in decisions if d.offer is not None]
    baseline = plan_cost(((req, d.offer) for d, req in routed if d.offer), dest)
    note = "per-line choice kept"
    suppliers_used = {d.offer.supplier_id for d, _ in routed if d.offer}
    if len(suppliers_used) > 1:
        better = _consolidate(routed, eligible_sets, dest, baseline, tolerance, len(suppliers_used))
        if better is not None:
            assignment, cost = better
            for d, _ in routed:
                chosen = assignment[d.line_id]
                if chosen.supplier_id != d.offer.supplier_id:  # type: ignore[union-attr]
                    d.reason = (
                        f"consolidated: {len({o.supplier_id for o in assignment.values()})} "
                        f"supplier(s) instead of {len(suppliers_used)} for {cost} "
                        f"(per-line choice {baseline}, tolerance {tolerance:%})"
                    )
                    d.offer = chosen
            note = (
                f"{len({o.supplier_id for o in assignment.values()})} supplier(s) instead of "
                f"{len(suppliers_used)}: landed cost {cost} within tolerance of {baseline}"
            )
            baseline = cost
    for d in decisions:
        for v in d.candidates:
            v.picked = d.offer is not None and v.supplier_id == str(d.offer.supplier_id)
    return RoutingPlan(lines=decisions, consolidation=note, landed_cost=baseline)


def _req(lines: Sequence[LineRequest], line_id: uuid.UUID) -> LineRequest:
    return next(line for line in lines if line.line_id == line_id)


def _consolidate(
    routed: list[tuple[LineDecision, LineRequest]],
    eligible: Mapping[uuid.UUID, list[Offer]],
    country: str,
    baseline: Decimal,
    tolerance: Decimal,
    used: int,
) -> tuple[dict[uuid.UUID, Offer], Decimal] | None:
    """The cheapest assignment using fewer suppliers within ``baseline * (1 + tolerance)``."""
    suppliers = sorted({o.supplier_id for offers in eligible.values() for o in offers}, key=str)[
        :MAX_CONSOLIDATION_SUPPLIERS
    ]
    limit = baseline * (1 + tolerance)
    for size in range(1, used):
        best: tuple[dict[uuid.UUID, Offer], Decimal] | None = None
        for combo in itertools.combinations(suppliers, size):
            allowed = set(combo)
            assignment = _assign(routed, eligible, allowed, country)
            if assignment is None:
                continue
            cost = plan_cost(((req, assignment[d.line_id]) for d, req in routed), country)
            if cost <= limit and (best is None or cost < best[1]):
                best = (assignment, cost)
        if best is not None:
            return best
    return None


def _assign(
    routed: list[tuple[LineDecision, LineRequest]],
    eligible: Mapping[uuid.UUID, list[Offer]],
    allowed: set[uuid.UUID],
    country: str,
) -> dict[uuid.UUID, Offer] | None:
    """Each line to its strategy's best offer among ``allowed``, respecting stock."""
    remaining: dict[tuple[uuid.UUID, str], int] = {}
    out: dict[uuid.UUID, Offer] = {}
    for d, req in routed:
        options = [o for o in eligible.get(d.line_id, []) if o.supplier_id in allowed]
        options.sort(key=lambda o: _rank_key(d.strategy, o, req.quantity, country))
        for o in options:
            left = remaining.setdefault((o.supplier_id, o.sku), o.stock)
            if left >= req.quantity:
                remaining[(o.supplier_id, o.sku)] = left - req.quantity
                out[d.line_id] = o
                break
        else:
            return None
    return out
