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
#: Upper bound on the consolidation search: combinations tried x lines routed. Every one of the
#: 4,095 combinations of 12 suppliers for orders of up to 12 lines; a 500-line order tries 100,
#: a fraction of a second. Smaller combinations come first: the search keeps the best it found.
MAX_CONSOLIDATION_WORK = 50_000


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

    requests = {line.line_id: line for line in lines}
    routed = [(d, requests[d.line_id]) for d in decisions if d.offer is not None]
    baseline = plan_cost(((req, d.offer) for d, req in routed if d.offer), dest)
    note = "per-line choice kept"
    suppliers_used = {d.offer.supplier_id for d, _ in routed if d.offer}
    if len(suppliers_used) > 1:
        better, complete = _consolidate(
            routed, eligible_sets, dest, baseline, tolerance, len(suppliers_used)
        )
        if not complete:
            note += f" (consolidation search stopped after {MAX_CONSOLIDATION_WORK} steps)"
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
            ) + ("" if complete else " (best found before the search stopped)")
            baseline = cost
    for d in decisions:
        for v in d.candidates:
            v.picked = d.offer is not None and v.supplier_id == str(d.offer.supplier_id)
    return RoutingPlan(lines=decisions, consolidation=note, landed_cost=baseline)


#: One way to serve a line in the consolidation search: (supplier bit, stock key, offer, goods
#: cost, quantity).
_Option = tuple[int, int, Offer, Decimal, int]


def _consolidate(
    routed: list[tuple[LineDecision, LineRequest]],
    eligible: Mapping[uuid.UUID, list[Offer]],
    country: str,
    baseline: Decimal,
    tolerance: Decimal,
    used: int,
) -> tuple[tuple[dict[uuid.UUID, Offer], Decimal] | None, bool]:
    """The cheapest assignment using fewer suppliers within ``baseline * (1 + tolerance)``, and
    whether the search was complete (it stops after ``MAX_CONSOLIDATION_WORK`` steps, keeping
    the best found: fewest suppliers first).

    Suppliers are bits and stock keys small integers here: the search runs the same few
    operations up to ``MAX_CONSOLIDATION_WORK`` times, and hashing UUIDs dominated it.
    """
    suppliers = sorted({o.supplier_id for offers in eligible.values() for o in offers}, key=str)[
        :MAX_CONSOLIDATION_SUPPLIERS
    ]
    bit_of = {s: 1 << i for i, s in enumerate(suppliers)}
    stock_keys: dict[tuple[uuid.UUID, str], int] = {}
    # Per line: its offers among those suppliers, in its strategy's order (``route`` ranked
    # them), as (supplier bit, stock key, offer, goods cost, quantity); and the bits that could
    # take it.
    lines: list[tuple[int, list[_Option]]] = []
    takers: list[int] = []
    for d, req in routed:
        options = [
            (
                bit_of[o.supplier_id],
                stock_keys.setdefault((o.supplier_id, o.sku), len(stock_keys)),
                o,
                o.unit_cost * req.quantity,
                req.quantity,
            )
            for o in eligible.get(d.line_id, ())
            if o.supplier_id in bit_of
        ]
        lines.append((req.quantity, options))
        mask = 0
        for option in options:
            mask |= option[0]
        takers.append(mask)
    limit = baseline * (1 + tolerance)
    budget = MAX_CONSOLIDATION_WORK
    for size in range(1, used):
        best: tuple[list[_Option], Decimal] | None = None
        for combo in itertools.combinations(bit_of.values(), size):
            budget -= len(routed)
            if budget < 0:
                return _named(routed, best), False
            allowed = sum(combo)
            if not all(allowed & t for t in takers):
                continue
            picked = _assign(lines, allowed)
            if picked is None:
                continue
            cost = _cost(picked, country)
            if cost <= limit and (best is None or cost < best[1]):
                best = (picked, cost)
        if best is not None:
            return _named(routed, best), True
    return None, True


def _assign(lines: list[tuple[int, list[_Option]]], allowed: int) -> list[_Option] | None:
    """Each line to its strategy's best offer among the ``allowed`` suppliers, respecting
    stock."""
    remaining: dict[int, int] = {}
    out = []
    for quantity, options in lines:
        for option in options:
            if not option[0] & allowed:
                continue
            key = option[1]
            left = remaining.get(key)
            if left is None:
                left = option[2].stock
            if left >= quantity:
                remaining[key] = left - quantity
                out.append(option)
                break
        else:
            return None
    return out


def _cost(picked: list[_Option], country: str) -> Decimal:
    """``plan_cost`` of an assignment from ``_assign`` (goods plus one parcel per supplier)."""
    goods = ZERO
    items: dict[int, int] = defaultdict(int)
    offers: dict[int, Offer] = {}
    for bit, _, offer, line_goods, quantity in picked:
        goods += line_goods
        items[bit] += quantity
        offers[bit] = offer
    return goods + sum((offers[b].rate(country).cost(n) for b, n in items.items()), ZERO)


def _named(
    routed: list[tuple[LineDecision, LineRequest]],
    best: tuple[list[_Option], Decimal] | None,
) -> tuple[dict[uuid.UUID, Offer], Decimal] | None:
    if best is None:
        return None
    picked, cost = best
    return {d.line_id: option[2] for (d, _), option in zip(routed, picked, strict=True)}, cost
