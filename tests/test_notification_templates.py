"""Customer email templates: the shipped ones (English and German, every kind), the merchant's
own through the API (validated by compiling and rendering a sample order in Jinja2's sandbox),
the preview, the language of a customer, and the merchant's settings API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.notifications import render as r
from tests.conftest import MerchantHandle
from tests.support.orders import Client

TEMPLATES = "/api/v1/notifications/templates"
GOOD = {
    "subject": "{{ shop.name }}: {{ order.name }} ships",
    "text": "Hi {{ order.customer_name }},\n{{ shipment.carrier }} {{ tracking_url }}\n",
    "html": '<p style="color:{{ shop.color }}">{{ order.name }} &mdash; {{ order.total }}</p>',
}


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("customer", "default", "expected"),
    [
        ("de", "en", "de"),
        ("de-DE", "en", "de"),
        ("de-CH", "en", "de"),
        ("de_AT", "en", "de"),
        ("DE-de", "en", "de"),
        ("en-GB", "de", "en"),
        ("fr-FR", "de", "de"),
        ("fr", "en", "en"),
        (None, "de", "de"),
        ("", "de", "de"),
        ("zz-??", "xx", "en"),
    ],
)
def test_the_customers_language_falls_back_to_the_merchants_then_english(
    customer: str | None, default: str, expected: str
) -> None:
    assert r.pick_locale(customer, default) == expected


def test_money_and_dates_follow_the_customers_region() -> None:
    facts = r.sample_facts("order_confirmation", "de", r.Brand("Acme"), "https://shop.test")
    de = r.context(facts, "de", r.format_locale("de-DE", "de"))
    assert de["order"]["total"] == "30,89\xa0€"
    assert de["order"]["placed_at"] == "14. März 2026"
    swiss = r.context(facts, "de", r.format_locale("de-CH", "de"))
    assert swiss["order"]["total"] == "EUR\xa030.89"
    en = r.context(facts, "en", r.format_locale("fr-FR", "en"))  # French region, English text
    assert en["order"]["total"] == "€30.89"
    assert en["order"]["placed_at"] == "March 14, 2026"


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("kind", r.KINDS)
def test_every_shipped_template_renders_complete_text_and_branded_html(
    kind: str, language: str
) -> None:
    brand = r.Brand("Acme Mugs", "https://cdn.test/logo.png", "#ff6600", "help@acme.example.com")
    facts = r.sample_facts(kind, language, brand, "https://shop.test")
    out = r.render_default(
        kind, language, r.context(facts, language, r.format_locale(None, language))
    )
    assert "#1001" in out.subject
    assert "\n" not in out.subject
    for body in (out.text, out.html):
        assert "https://shop.test/track/sample" in body
        assert "Acme Mugs" in body
    assert "#ff6600" in out.html
    assert 'src="https://cdn.test/logo.png"' in out.html
    assert f'<html lang="{language}">' in out.html
    assert "{{" not in out.text + out.html
    if kind in ("shipped", "out_for_delivery", "delayed"):
        assert "00340434161094042557" in out.text
        assert "DHL" in out.text


def test_a_bare_order_renders_too() -> None:
    """No customer name, address, carrier or number: the shipped templates leave them out."""
    order = r.OrderFacts(
        name="#7",
        placed_at=r.sample_facts("shipped", "en", r.Brand("A"), "x").order.placed_at,
        currency="JPY",
        subtotal=Decimal("2000"),
        shipping=Decimal("0"),
        tax=Decimal("0"),
        discounts=Decimal("0"),
        total=Decimal("2000"),
        tracking_url="https://t.test/track/abc",
    )
    shipment = r.ShipmentFacts(None, None, None, order.placed_at, "shipped")
    for kind in r.KINDS:
        facts = r.Facts(
            brand=r.Brand("A"),
            order=order,
            shipment=shipment
            if kind in ("shipped", "out_for_delivery", "delivered", "delayed")
            else None,
            event=r.EventFacts(status=kind),
            # The least each kind's event carries.
            refund=r.RefundFacts(Decimal("5"), "JPY") if kind == "refund_issued" else None,
            rma=r.ReturnFacts("RMA-1") if kind.startswith("return_") else None,
        )
        out = r.render_default(kind, "en", r.context(facts, "en", r.format_locale(None, "en")))
        assert out.text.startswith("Hello,\n")
        assert "None" not in out.text
        assert "Carrier" not in out.text
    facts = r.Facts(brand=r.Brand("A"), order=order, event=r.EventFacts(status="cancelled"))
    assert (
        "Order total: ¥2,000"
        in r.render_default(
            "cancelled", "en", r.context(facts, "en", r.format_locale(None, "en"))
        ).text
    )


def test_html_escapes_and_text_does_not() -> None:
    facts = r.sample_facts("shipped", "en", r.Brand("Tom & Jerry <Shop>"), "https://s.test")
    out = r.render_default("shipped", "en", r.context(facts, "en", r.format_locale(None, "en")))
    assert "Tom &amp; Jerry &lt;Shop&gt;" in out.html
    assert "Tom & Jerry <Shop>" in out.text


def test_the_sandbox_refuses_powers_and_huge_repeats() -> None:
    ctx = r.context(
        r.sample_facts("shipped", "en", r.Brand("A"), "x"), "en", r.format_locale(None, "en")
    )
    for source, message in [
        ("{{ 9 ** 9 ** 9 }}", "the ** operator is not allowed"),
        ("{{ 'x' * 100000000 }}", "too large"),
        ("{{ [1] * 10000000 }}", "too large"),
        ("{{ ''.__class__.__mro__ }}", "not allowed"),
        ("{{ order.lines.append(1) }}", "not allowed"),
    ]:
        with pytest.raises(r.TemplateProblem) as caught:
            r.render(r.Source(source, "t", "h"), ctx)
        assert caught.value.field == "subject"
        assert message in caught.value.detail, caught.value.detail
    with pytest.raises(r.TemplateProblem) as caught:
        r.render(r.Source("s", "{% for i in range(90000) %}{{ 'y' * 20 }}{% endfor %}", "h"), ctx)
    assert "renders to more than 1000000 characters" in caught.value.detail


# --------------------------------------------------------------------------- API


async def put(
    client: Client, shop: MerchantHandle, event: str, body: dict[str, Any], **params: str
) -> Any:
    return await client.put(f"{TEMPLATES}/{event}", json=body, params=params, headers=shop.headers)


async def test_get_gives_the_shipped_template_until_the_merchant_has_one(
    client: Client, merchant: MerchantHandle
) -> None:
    r1 = await client.get(f"{TEMPLATES}/shipped", headers=merchant.headers)
    assert r1.status_code == 200, r1.text
    body = r1.json()
    assert body["customized"] is False
    assert body["updated_at"] is None
    assert (body["event"], body["locale"]) == ("shipped", "en")
    assert body["subject"] == "Your order {{ order.name }} is on its way\n"
    assert body["html"].startswith('{% extends "en/_layout.html" %}')

    de = (await client.get(f"{TEMPLATES}/shipped?locale=de", headers=merchant.headers)).json()
    assert de["subject"] == "Ihre Bestellung {{ order.name }} ist unterwegs\n"

    saved = await put(client, merchant, "shipped", GOOD, locale="de")
    assert saved.status_code == 200, saved.text
    assert saved.json()["customized"] is True
    got = (await client.get(f"{TEMPLATES}/shipped?locale=de", headers=merchant.headers)).json()
    assert (got["subject"], got["text"], got["html"]) == (
        GOOD["subject"],
        GOOD["text"],
        GOOD["html"],
    )
    assert got["customized"] is True
    # English is untouched.
    en = (await client.get(f"{TEMPLATES}/shipped", headers=merchant.headers)).json()
    assert en["customized"] is False

    # Saved again: replaced, still one.
    again = await put(client, merchant, "shipped", {**GOOD, "subject": "Neu"}, locale="de")
    assert again.json()["subject"] == "Neu"

    gone = await client.delete(f"{TEMPLATES}/shipped?locale=de", headers=merchant.headers)
    assert gone.status_code == 204
    back = (await client.get(f"{TEMPLATES}/shipped?locale=de", headers=merchant.headers)).json()
    assert back["customized"] is False
    assert back["subject"] == de["subject"]


async def test_the_default_locale_is_the_merchants(
    client: Client, merchant: MerchantHandle
) -> None:
    r1 = await client.put(
        "/api/v1/settings",
        json={"notifications": {"default_locale": "de"}},
        headers=merchant.headers,
    )
    assert r1.status_code == 200, r1.text
    got = (await client.get(f"{TEMPLATES}/delivered", headers=merchant.headers)).json()
    assert got["locale"] == "de"
    assert got["subject"] == "Ihre Bestellung {{ order.name }} wurde zugestellt\n"


@pytest.mark.parametrize(
    ("part", "source", "detail", "line"),
    [
        (
            "text",
            "Hello\n\n{{ order.name ",
            "text: line 3: syntax error: unexpected end of template",
            "3",
        ),
        (
            "subject",
            "{% if order.name %}x",
            "subject: line 1: syntax error: Unexpected end of template",
            "1",
        ),
        (
            "html",
            "<p>\n{{ customer.name }}</p>",
            "html: line 2: cannot render: 'customer' is undefined",
            "2",
        ),
        (
            "text",
            "{{ order.nme }}",
            "text: line 1: cannot render: 'dict object' has no attribute 'nme'",
            "1",
        ),
        (
            "text",
            "a\n{{ ''.__class__.__mro__ }}",
            "text: line 2: not allowed: access to attribute '__class__' of 'str' object is unsafe.",
            "2",
        ),
        ("text", "{{ 1 / 0 }}", "text: line 1: cannot render: division by zero", "1"),
        (
            "html",
            "{{ order.name | nosuchfilter }}",
            "html: line 1: syntax error: No filter named 'nosuchfilter'.",
            "1",
        ),
    ],
)
async def test_a_template_that_does_not_render_is_refused_with_its_line(
    client: Client, merchant: MerchantHandle, part: str, source: str, detail: str, line: str
) -> None:
    resp = await put(client, merchant, "shipped", {**GOOD, part: source})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["detail"].startswith(detail), body["detail"]
    assert body["extra"] == {"field": part, "line": line}
    # Nothing stored.
    got = (await client.get(f"{TEMPLATES}/shipped", headers=merchant.headers)).json()
    assert got["customized"] is False


async def test_a_shipment_variable_in_a_cancellation_is_refused(
    client: Client, merchant: MerchantHandle
) -> None:
    """Each kind validates against its own sample: a cancelled order has no parcel."""
    resp = await put(client, merchant, "cancelled", GOOD)
    assert resp.status_code == 400
    assert resp.json()["detail"] == (
        "text: line 2: cannot render: 'None' has no attribute 'carrier'"
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        (f"{TEMPLATES}/gift_card", GOOD, 404, "event: no customer email 'gift_card'"),
        (f"{TEMPLATES}/shipped?locale=fr", GOOD, 400, "locale: one of en, de"),
        (f"{TEMPLATES}/shipped", {**GOOD, "html": ""}, 400, "html"),
        (f"{TEMPLATES}/shipped", {**GOOD, "extra": 1}, 400, "extra"),
        (f"{TEMPLATES}/shipped", {"subject": "s", "text": "t"}, 400, "html"),
        (f"{TEMPLATES}/shipped", {**GOOD, "text": "a\x00b"}, 400, "text: must not contain NUL"),
        (f"{TEMPLATES}/shipped", {**GOOD, "html": "x" * 100_001}, 400, "html"),
    ],
)
async def test_bad_requests_name_what_is_wrong(
    client: Client, merchant: MerchantHandle, path: str, body: Any, status: int, detail: str
) -> None:
    resp = await client.put(path, json=body, headers=merchant.headers)
    assert resp.status_code == status, resp.text
    assert detail in resp.json()["detail"]


async def test_preview_renders_a_sample_order_with_the_brand(
    client: Client, merchant: MerchantHandle
) -> None:
    branding = {"store_name": "Acme Mugs", "color": "#ff6600", "logo_url": "https://cdn.test/l.png"}
    r1 = await client.put("/api/v1/settings", json={"branding": branding}, headers=merchant.headers)
    assert r1.status_code == 200, r1.text

    shipped = await client.post(f"{TEMPLATES}/shipped/preview", headers=merchant.headers)
    assert shipped.status_code == 200, shipped.text
    out = shipped.json()
    assert out["subject"] == "Your order #1001 is on its way"
    assert "background-color:#ff6600" in out["html"]
    assert 'src="https://cdn.test/l.png"' in out["html"]
    assert "http://testserver.local/track/sample" in out["text"]
    assert "- 2 x Red mug\n- 1 x Blue cap\n" in out["text"]

    de = await client.post(
        f"{TEMPLATES}/order_confirmation/preview?locale=de", json={}, headers=merchant.headers
    )
    assert de.json()["subject"] == "Bestellung #1001 bestätigt"
    assert "Gesamt: 30,89\xa0€" in de.json()["text"]

    # Posted parts replace the stored ones for this preview only.
    posted = await client.post(
        f"{TEMPLATES}/shipped/preview",
        json={"subject": "{{ order.total }} for {{ order.customer_name }}"},
        headers=merchant.headers,
    )
    assert posted.json()["subject"] == "$30.89 for Ada Lovelace"
    assert posted.json()["text"] == out["text"]
    broken = await client.post(
        f"{TEMPLATES}/shipped/preview", json={"html": "{% for %}"}, headers=merchant.headers
    )
    assert broken.status_code == 400
    assert broken.json()["extra"]["field"] == "html"

    # A stored template is what the preview shows.
    await put(client, merchant, "shipped", GOOD)
    mine = (await client.post(f"{TEMPLATES}/shipped/preview", headers=merchant.headers)).json()
    assert mine["subject"] == "Acme Mugs: #1001 ships"
    assert mine["html"] == '<p style="color:#ff6600">#1001 &mdash; $30.89</p>'


async def test_another_merchants_templates_are_not_visible(
    client: Client, merchant: MerchantHandle, other_merchant: MerchantHandle
) -> None:
    assert (await put(client, merchant, "delivered", GOOD)).status_code == 200
    theirs = (await client.get(f"{TEMPLATES}/delivered", headers=other_merchant.headers)).json()
    assert theirs["customized"] is False
    preview = (
        await client.post(f"{TEMPLATES}/delivered/preview", headers=other_merchant.headers)
    ).json()
    assert preview["subject"] == "Your order #1001 has been delivered"
    # Their reset does not touch ours.
    await client.delete(f"{TEMPLATES}/delivered", headers=other_merchant.headers)
    ours = (await client.get(f"{TEMPLATES}/delivered", headers=merchant.headers)).json()
    assert ours["customized"] is True
    assert (await client.get(f"{TEMPLATES}/delivered")).status_code == 401


# --------------------------------------------------------------------------- settings


async def test_settings_round_trip_and_keep_what_is_not_given(
    client: Client, merchant: MerchantHandle
) -> None:
    first = (await client.get("/api/v1/settings", headers=merchant.headers)).json()
    assert first["branding"] == {
        "store_name": None,
        "logo_url": None,
        "color": None,
        "sender_email": None,
        "reply_to": None,
    }
    assert first["notifications"]["shipped"] is True
    assert first["routing"]["auto_route"] is False  # as the test merchant was made

    change = {
        "branding": {
            "store_name": "Acme",
            "sender_email": "shop@acme.example.com",
            "reply_to": "help@acme.example.com",
        },
        "notifications": {"shipped": False, "default_locale": "de"},
    }
    r1 = await client.put("/api/v1/settings", json=change, headers=merchant.headers)
    assert r1.status_code == 200, r1.text
    body = r1.json()
    assert body["branding"]["store_name"] == "Acme"
    assert body["branding"]["color"] is None
    assert body["notifications"]["shipped"] is False
    assert body["notifications"]["delivered"] is True
    assert body["routing"] == first["routing"]
    assert (await client.get("/api/v1/settings", headers=merchant.headers)).json() == body

    # The routing endpoint and this one see the same section.
    rr = await client.put(
        "/api/v1/routing/settings",
        json={"auto_route": True, "consolidation_tolerance": "0.10"},
        headers=merchant.headers,
    )
    assert rr.status_code == 200, rr.text
    after = (await client.get("/api/v1/settings", headers=merchant.headers)).json()
    assert after["routing"] == {"auto_route": True, "consolidation_tolerance": "0.10"}
    assert after["branding"] == body["branding"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"branding": {"color": "orange"}}, "color: #RRGGBB"),
        (
            {"branding": {"sender_email": "not an address"}},
            "sender_email: expected one email address",
        ),
        ({"branding": {"logo_url": "http://x.test/l.png"}}, "logo_url: an https:// URL"),
        ({"notifications": {"default_locale": "fr"}}, "default_locale: one of en, de"),
        ({"notifications": {"shiped": False}}, "shiped"),
        ({"tracking": {"stale_after_days": 0}}, "stale_after_days"),
        ({"colour": "#ffffff"}, "colour"),
        ({"routable_financial_statuses": []}, "routable_financial_statuses"),
    ],
)
async def test_a_bad_setting_is_a_400_naming_it_and_changes_nothing(
    client: Client, merchant: MerchantHandle, body: dict[str, Any], detail: str
) -> None:
    before = (await client.get("/api/v1/settings", headers=merchant.headers)).json()
    resp = await client.put(
        "/api/v1/settings",
        json={"branding": {"store_name": "Changed"}, **body},
        headers=merchant.headers,
    )
    assert resp.status_code == 400, resp.text
    assert detail in resp.json()["detail"]
    assert (await client.get("/api/v1/settings", headers=merchant.headers)).json() == before


@pytest.mark.parametrize(
    ("source", "notify_customer", "skipped"),
    [
        ("manual", True, set()),
        ("shopify", False, {"order_confirmation"}),
        ("shopify", True, {"order_confirmation", "shipped", "out_for_delivery", "delivered"}),
    ],
)
def test_what_shopify_emails_itself_we_do_not_send_twice(
    source: str, notify_customer: bool, skipped: set[str]
) -> None:
    from app.merchants.settings import MerchantSettings, ShopifySettings
    from app.notifications.service import _skipped_for_shopify
    from app.orders.models import Order

    s = MerchantSettings(shopify=ShopifySettings(notify_customer=notify_customer))
    order = Order(source=source)
    assert {k for k in r.KINDS if _skipped_for_shopify(k, order, s)} == skipped
    no_sync = MerchantSettings(
        shopify=ShopifySettings(sync_fulfillments=False, notify_customer=True)
    )
    assert {k for k in r.KINDS if _skipped_for_shopify(k, order, no_sync)} == (
        {"order_confirmation"} if source == "shopify" else set()
    )
