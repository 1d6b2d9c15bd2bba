"""Our stricter log redaction inside ``shopifyapp``'s webhook verification changes what is logged,
never the verdict: a property test compares both across random bodies, secrets and headers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import shopify_app.verify._body_hmac_in_header as body_hmac
from hypothesis import given, settings
from hypothesis import strategies as st
from shopify_app import ShopifyApp
from shopify_app.utils import redact_http_log as library_redaction

from app.webhooks import shopify_verify


def _sign(body: str, secret: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    ).decode()


def _verdict(app: ShopifyApp, body: str, header: str | None, *, ours: bool) -> tuple[bool, str]:
    original = body_hmac.redact_http_log
    body_hmac.redact_http_log = shopify_verify.redact_request if ours else library_redaction
    try:
        headers = {"x-shopify-shop-domain": "a.myshopify.com", "content-type": "application/json"}
        if header is not None:
            headers["X-Shopify-Hmac-Sha256"] = header
        result = app.verify_webhook_req(
            {"method": "POST", "headers": headers, "url": "/webhooks/shopify", "body": body}
        )
        return result.ok, result.log.code
    finally:
        body_hmac.redact_http_log = original


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.text(max_size=300), st.dictionaries(st.text(max_size=8), st.integers()).map(str)
    ),
    secret=st.text(min_size=1, max_size=40),
    old=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    which=st.sampled_from(["current", "old", "other", "missing", "garbage"]),
)
def test_verdicts_are_the_libraries_own(
    body: str, secret: str, old: str | None, which: str
) -> None:
    app = ShopifyApp(client_id="id", client_secret=secret, old_client_secret=old)
    header = {
        "current": _sign(body, secret),
        "old": _sign(body, old or "x"),
        "other": _sign(body, secret + "!"),
        "missing": None,
        "garbage": "not base64 at all",
    }[which]
    assert _verdict(app, body, header, ours=True) == _verdict(app, body, header, ours=False)


def test_logged_request_never_carries_the_body_or_the_signature() -> None:
    shopify_verify.install()
    app = ShopifyApp(client_id="id", client_secret="s")
    body = '{"email": "customer@example.com", "shipping_address": {"address1": "1 Main St"}}'
    result = app.verify_webhook_req(
        {
            "method": "POST",
            "headers": {"X-Shopify-Hmac-Sha256": _sign(body, "s")},
            "url": "/webhooks/shopify?hmac=abc",
            "body": body,
        }
    )
    assert result.ok
    logged = str(result.log.req)
    assert "customer@example.com" not in logged
    assert "1 Main St" not in logged
    assert _sign(body, "s") not in logged
    assert "abc" not in logged
    assert f"[{len(body)} characters omitted]" in logged


def test_install_refuses_when_the_library_moved_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(body_hmac, "redact_http_log")
    with pytest.raises(RuntimeError, match=r"review app/webhooks/shopify_verify\.py"):
        shopify_verify.install()
