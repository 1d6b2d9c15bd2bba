"""The routing decision on a table of cases, and its safety properties under hypothesis."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.routing.engine import LineRequest, Offer, ShippingRate, route

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))
NAMES = {A: "Alpha", B: "Bravo", C: "Charlie"}


def offer(
    supplier: uuid.UUID,
    sku: str,
    cost: str,
    *,
    stock: int = 100,
    lead: int = 5,
    priority: int = 1,
    ships_to: tuple[str, ...] = ("*",),
    active: bool = True,
    first: str = "0",
    additional: str = "0",
) -> Offer:
    return Offer(
        supplier_id=supplier,
        supplier_name=NAMES[supplier],
        supplier_active=active,
        sku=sku,
        supplier_sku=f"{NAMES[supplier][:1]}-{sku}",
        unit_cost=Decimal(cost),
        currency="USD",
        stock=stock,
        lead_time_days=lead,
        ships_to=ships_to,
        priority=priority,
        shipping={"*": ShippingRate(Decimal(first), Decimal(additional))},
    )


def line(sku: str, qty: int = 1, strategy: str = "priority") -> LineRequest:
    return LineRequest(line_id=uuid.uuid4(), sku=sku, quantity=qty, strategy=strategy)


@pytest.mark.parametrize(
    ("strategy", "offers", "expected"),
    [
        ("priority", [offer(A, "X", "9", priority=2), offer(B, "X", "12", priority=1)], B),
        ("cheapest", [offer(A, "X", "9", priority=2), offer(B, "X", "12", priority=1)], A),
        # Landed cost counts shipping: cheaper goods, dearer shipping loses.
        ("cheapest", [offer(A, "X", "9", first="7"), offer(B, "X", "12", first="0")], B),
        ("fastest", [offer(A, "X", "9", lead=7), offer(B, "X", "12", lead=2)], B),
        # Priority tie: the cheaper one.
        ("priority", [offer(A, "X", "9"), offer(B, "X", "8")], B),
        # Constraints before strategy.
        ("cheapest", [offer(A, "X", "1", active=False), offer(B, "X", "12")], B),
        ("cheapest", [offer(A, "X", "1", ships_to=("DE",)), offer(B, "X", "12")], B),
        ("cheapest", [offer(A, "X", "1", stock=1), offer(B, "X", "12")], B),
    ],
)
def test_strategy_table(strategy: str, offers: list[Offer], expected: uuid.UUID) -> None:
    plan = route([line("X", 2, strategy)], "US", offers)
    [decision] = plan.lines
    assert decision.offer is not None
    assert decision.offer.supplier_id == expected
    picked = [c for c in decision.candidates if c.picked]
    assert [c.supplier_id for c in picked] == [str(expected)]


def test_two_lines_route_to_two_suppliers_and_explain_why() -> None:
    plan = route(
        [line("X"), line("Y")],
        "US",
        [offer(A, "X", "5"), offer(B, "Y", "5"), offer(C, "Y", "9", ships_to=("FR",))],
    )
    assert {d.sku: d.offer.supplier_id for d in plan.lines if d.offer} == {"X": A, "Y": B}
    y = next(d for d in plan.lines if d.sku == "Y")
    reasons = {c.supplier_name: c.reason for c in y.candidates}
    assert reasons == {"Bravo": "eligible", "Charlie": "does not ship to US"}


def test_unknown_sku_and_no_stock_are_unroutable_with_the_reason() -> None:
    plan = route([line("NOPE"), line("X", 5)], "US", [offer(A, "X", "5", stock=3)])
    assert [d.reason for d in plan.unroutable] == [
        "no supplier offers this SKU",
        "no eligible supplier",
    ]
    assert plan.unroutable[1].candidates[0].reason == "stock 3 < quantity 5"


def test_stock_is_shared_by_lines_of_the_same_sku() -> None:
    plan = route(
        [line("X", 3), line("X", 3)], "US", [offer(A, "X", "5", stock=4), offer(B, "X", "6")]
    )
    assert [d.offer.supplier_id for d in plan.lines if d.offer] == [A, B]


def test_excluded_supplier_is_skipped_for_that_line_only() -> None:
    first, second = line("X"), line("X")
    plan = route(
        [first, second],
        "US",
        [offer(A, "X", "5"), offer(B, "X", "6")],
        exclusions={first.line_id: {A}},
    )
    assert [d.offer.supplier_id for d in plan.lines if d.offer] == [B, A]


def test_consolidation_prefers_fewer_suppliers_within_tolerance() -> None:
    offers = [
        offer(A, "X", "10", first="4"),
        offer(B, "Y", "10", first="4"),
        offer(A, "Y", "10.50", first="4"),
    ]
    # Per line: X->A, Y->B = 20 + 4 + 4 = 28. All at A: 20.50 + 4 = 24.50: cheaper anyway.
    plan = route([line("X", strategy="cheapest"), line("Y", strategy="cheapest")], "US", offers)
    assert {d.offer.supplier_id for d in plan.lines if d.offer} == {A}
    assert plan.landed_cost == Decimal("24.50")

    # Without shipping savings, one supplier costs 0.50 more: within 5 %, not within 1 %.
    offers = [offer(A, "X", "10"), offer(B, "Y", "10"), offer(A, "Y", "10.50")]
    lines = [line("X", strategy="cheapest"), line("Y", strategy="cheapest")]
    assert len(route(lines, "US", offers, tolerance=Decimal("0.05")).by_supplier()) == 1
    assert len(route(lines, "US", offers, tolerance=Decimal("0.01")).by_supplier()) == 2


suppliers = st.sampled_from([A, B, C])
offers_strategy = st.lists(
    st.builds(
        offer,
        suppliers,
        st.sampled_from(["X", "Y", "Z"]),
        st.decimals(min_value=0, max_value=100, places=2).map(str),
        stock=st.integers(0, 10),
        lead=st.integers(0, 20),
        priority=st.integers(1, 3),
        ships_to=st.sampled_from([("*",), ("US",), ("DE",), ("US", "DE")]),
        active=st.booleans(),
        first=st.sampled_from(["0", "3.5"]),
    ),
    max_size=9,
    unique_by=lambda o: (o.supplier_id, o.sku),
)
lines_strategy = st.lists(
    st.builds(
        LineRequest,
        st.uuids(),
        st.sampled_from(["X", "Y", "Z"]),
        st.integers(1, 6),
        st.sampled_from(["priority", "cheapest", "fastest"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(
    lines=lines_strategy,
    offers=offers_strategy,
    country=st.sampled_from(["US", "DE", "FR"]),
    tolerance=st.sampled_from([Decimal("0"), Decimal("0.1"), Decimal("1")]),
)
def test_routing_never_breaks_a_constraint(
    lines: list[LineRequest], offers: list[Offer], country: str, tolerance: Decimal
) -> None:
    exclusions = {lines[0].line_id: {A}}
    plan = route(lines, country, offers, tolerance=tolerance, exclusions=exclusions)
    taken: dict[tuple[uuid.UUID, str], int] = defaultdict(int)
    for d in plan.routed:
        o = d.offer
        assert o is not None
        assert o.supplier_active, "inactive supplier"
        assert o.ships(country), "does not ship there"
        assert o.sku == d.sku
        assert o.supplier_id not in exclusions.get(d.line_id, set()), "excluded supplier"
        taken[(o.supplier_id, o.sku)] += d.quantity
    stock = {(o.supplier_id, o.sku): o.stock for o in offers}
    for key, qty in taken.items():
        assert qty <= stock[key], "more than stock"
    # Every line is decided exactly once.
    assert [d.line_id for d in plan.lines] == [ln.line_id for ln in lines]
