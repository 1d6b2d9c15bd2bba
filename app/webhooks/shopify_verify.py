"""Shopify webhook verification through ``shopifyapp``, with a stricter log redaction.

``shopifyapp.verify_webhook_req`` attaches a copy of the request to its result for logging, and
builds it with ``redact_http_log``, which parses and re-serialises the whole JSON body to blank a
few OAuth fields. For webhooks that is the wrong trade twice over: the body is customer data
(names, addresses, emails) that must not reach logs at all, and the JSON round trip cost about
three quarters of the verification's CPU (≈190 of ≈250 µs for a 5 KB order) on our hottest path.

``install()`` replaces that helper, inside the verification module only, with one that keeps
the method, path and non-secret headers and omits the body. The HMAC check itself is untouched:
``tests/test_shopify_verify.py`` pins that verdicts are identical to the library's own.
"""

from __future__ import annotations

from typing import Any, cast

import shopify_app.verify._body_hmac_in_header as _body_hmac
from shopify_app.types import RequestInput

_REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset(
    {"authorization", "x-shopify-access-token", "x-shopify-hmac-sha256", "shopify-hmac-sha256"}
)


def redact_request(req: RequestInput) -> RequestInput:
    headers = req.get("headers")
    body = req.get("body")
    url = req.get("url")
    return cast(
        RequestInput,
        {
            "method": req.get("method"),
            "headers": {
                k: (_REDACTED if k.lower() in _SECRET_HEADERS else v)
                for k, v in (headers.items() if isinstance(headers, dict) else ())
            },
            "url": url.split("?", 1)[0] if isinstance(url, str) else url,
            "body": f"[{len(body)} characters omitted]" if isinstance(body, str) else body,
        },
    )


def install() -> None:
    """Idempotent. Fails loudly if a ``shopifyapp`` upgrade moved the helper we replace."""
    current: Any = getattr(_body_hmac, "redact_http_log", None)
    if current is None:
        raise RuntimeError(
            "shopify_app.verify._body_hmac_in_header.redact_http_log is gone: "
            "review app/webhooks/shopify_verify.py against the new shopifyapp release"
        )
    _body_hmac.redact_http_log = redact_request  # type: ignore[attr-defined]
