"""The merchant's settings: one typed schema, parsed in one place (``app.merchants.settings``)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from app.merchants.settings import (
    DEFAULT_ROUTABLE_PAYMENT,
    MerchantSettings,
    RoutingSettings,
    parse,
)


def test_nothing_stored_is_every_default() -> None:
    assert parse(None) == parse({}) == MerchantSettings()
    assert parse(None).routing == RoutingSettings(
        auto_route=True, consolidation_tolerance=Decimal("0.05")
    )
    assert parse(None).routable_financial_statuses == DEFAULT_ROUTABLE_PAYMENT


def test_stored_values_round_trip() -> None:
    chosen = MerchantSettings(
        routing=RoutingSettings(auto_route=False, consolidation_tolerance=Decimal("0.10")),
        routable_financial_statuses=("paid",),
    )
    stored = msgspec.json.decode(msgspec.json.encode(msgspec.to_builtins(chosen)))
    assert stored == {
        "routing": {"auto_route": False, "consolidation_tolerance": "0.10"},
        "routable_financial_statuses": ["paid"],
    }
    assert parse(stored) == chosen


def test_a_section_that_no_longer_fits_keeps_its_default_and_spares_the_others() -> None:
    parsed = parse(
        {
            "routing": {"auto_route": False, "consolidation_tolerance": "9"},  # over the bound
            "routable_financial_statuses": ["paid", "partially_paid"],
            "unknown_section": {"x": 1},
        }
    )
    assert parsed.routing == RoutingSettings()
    assert parsed.routable_financial_statuses == ("paid", "partially_paid")
    assert parse({"routable_financial_statuses": []}).routable_financial_statuses == (
        DEFAULT_ROUTABLE_PAYMENT
    )
