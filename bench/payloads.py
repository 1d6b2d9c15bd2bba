"""Pre-generated, pre-signed ``orders/create`` webhook requests (no crypto in the timed phase).

Bodies are Shopify's real REST order (``tests/support/shopify.order_payload``) as a new order looks
when ``orders/create`` fires (no fulfillments yet, one line item by default; bench/route.py uses
all three), compact JSON of about 3 KB, each with its own order id, name, number and token.
Every request has a unique ``X-Shopify-Webhook-Id`` and ``X-Shopify-Event-Id``, except that every
tenth request re-sends, byte for byte, one of the recent earlier ones (Shopify's at-least-once
redelivery): 10% duplicates.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tests.support.shopify import order_payload, webhook_headers

SHOP = "acme-store.myshopify.com"
DUPLICATE_EVERY = 10  # every 10th request is a redelivery: 10% duplicates


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    head: bytes  # header lines, each ending in CRLF (no request line, Host or Content-Length)
    body: bytes
    webhook_id: str
    duplicate: bool  # a redelivery of an earlier request

    def raw(self, path: str, host: str) -> bytes:
        """The complete HTTP/1.1 request."""
        return b"".join(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode(),
                self.head,
                f"Content-Length: {len(self.body)}\r\n\r\n".encode(),
                self.body,
            )
        )

    @property
    def body_md5(self) -> str:
        return hashlib.md5(self.body).hexdigest()


def _base_order(lines: int = 1) -> dict[str, object]:
    order = order_payload(fulfillments=[], fulfillment_status=None)
    order["line_items"] = order["line_items"][:lines]
    order.pop("payment_details", None)
    return order


def generate(
    n: int, *, secret: str, shop: str = SHOP, seed: int = 7, lines: int = 1
) -> list[WebhookRequest]:
    """``n`` requests; ``i % 10 == 9`` re-sends one of the last 200 unique ones.

    ``lines``: line items per order (the fixture has 3: IPOD2008GREEN, RED, BLACK)."""
    rng = random.Random(seed)
    base = _base_order(lines)
    encode = msgspec.json.Encoder().encode
    uniques: list[WebhookRequest] = []
    out: list[WebhookRequest] = []
    for i in range(n):
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and uniques:
            original = uniques[-rng.randint(1, min(200, len(uniques)))]
            out.append(
                WebhookRequest(original.head, original.body, original.webhook_id, duplicate=True)
            )
            continue
        order_id = 5_000_000_000 + i
        number = 1001 + i
        base.update(
            id=order_id,
            admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
            name=f"#{number}",
            number=number,
            order_number=number,
            token=uuid.UUID(int=rng.getrandbits(128)).hex,
        )
        body = encode(base)
        webhook_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        headers = webhook_headers(
            body, secret=secret, shop=shop, webhook_id=webhook_id, event_id=event_id
        )
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        req = WebhookRequest(head, body, webhook_id, duplicate=False)
        uniques.append(req)
        out.append(req)
    return out


def write_wrk_file(path: Path, requests: Iterable[WebhookRequest]) -> None:
    """The file ``bench/wrk_requests.lua`` reads: per request ``"<hlen> <blen>\\n"``, head, body."""
    with path.open("wb") as f:
        for r in requests:
            f.write(b"%d %d\n" % (len(r.head), len(r.body)))
            f.write(r.head)
            f.write(r.body)


def mean_body_size(requests: Sequence[WebhookRequest]) -> float:
    return sum(len(r.body) for r in requests) / max(1, len(requests))
