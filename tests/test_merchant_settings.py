"""The merchant's settings: one typed schema, parsed in one place (``app.merchants.settings``)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

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
        "branding": {
            "store_name": None,
            "logo_url": None,
            "color": None,
            "sender_email": None,
            "reply_to": None,
        },
        "notifications": {
            "order_confirmation": True,
            "shipped": True,
            "out_for_delivery": True,
            "delivered": True,
            "delayed": True,
            "cancelled": True,
            "refund_issued": True,
            "return_requested": True,
            "return_approved": True,
            "return_rejected": True,
            "return_received": True,
            "default_locale": "en",
            "alert_recipients": [],
        },
        "tracking": {"stale_after_days": 7},
        "shopify": {"sync_fulfillments": True, "notify_customer": False, "record_refunds": True},
        "returns": {
            "window_days": 30,
            "auto_approve": True,
            "return_address": None,
            "instructions": None,
            "stall_after_days": 14,
        },
        "cancellation": {"customer_can_cancel": True},
        "refunds": {"on_cancel": "auto", "on_return": "auto", "restocking_fee": None},
        "routable_financial_statuses": ["paid"],
    }
    assert parse(stored) == chosen


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("branding", {"color": "blue"}, "color: #RRGGBB, like #1a73e8"),
        ("branding", {"logo_url": "http://x.test/l.png"}, "logo_url: an https:// URL"),
        ("branding", {"reply_to": "a@b@c"}, "reply_to: expected one email address"),
        ("notifications", {"default_locale": "fr"}, "default_locale: one of en, de"),
        ("notifications", {"alert_recipients": ["ok@example.com", "no"]}, "alert_recipients[1]"),
        ("tracking", {"stale_after_days": 0}, "Expected `int` >= 1"),
        ("tracking", {"stale_after_days": 91}, "Expected `int` <= 90"),
    ],
)
def test_new_sections_refuse_bad_values_naming_them(
    section: str, value: dict[str, object], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({section: value}, MerchantSettings, strict=False)
    assert message in str(caught.value)
    assert getattr(parse({section: value}), section) == getattr(MerchantSettings(), section)


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
