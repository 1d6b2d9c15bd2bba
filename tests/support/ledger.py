"""The end-to-end ledger: after a run (with or without faults), every effect happened exactly once.

``check`` reads the database and what the outside world saw (the REST supplier's orders, the
Shopify store's fulfillments, the SMTP sink's messages, Stripe's refunds) and lists every
discrepancy, so a failure names what was lost or doubled:

* every accepted webhook delivery is stored once, processed, and is exactly one order;
* every routable order line (its SKU is in the catalog) is exactly one purchase-order line of a
  placed purchase order (not pending, failed, rejected, cancelled);
* the REST supplier holds exactly one order per REST purchase order (its distinct
  ``Idempotency-Key`` values are the purchase orders' keys);
* every shipment is exactly one Shopify fulfillment (state ``created``, its id in the store once)
  and exactly one ``shipped`` customer email, sent, received by the SMTP server once;
* every refund asked for is exactly one refund row, succeeded, and exactly one Stripe refund.

Used by tests/test_faults.py and bench/e2e.py.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.db import Database

#: Purchase-order statuses that mean "handed to the supplier" (or later).
PLACED = ("placed", "accepted", "partially_shipped", "shipped", "delivered")


@dataclass
class Outside:
    """What the world outside the service saw."""

    #: ``X-Shopify-Webhook-Id`` of every webhook answered 2xx (a redelivery counts once).
    accepted_webhooks: set[str]
    #: SKUs the catalog offers (lines of other SKUs are not routable).
    routable_skus: set[str]
    #: Idempotency-Key -> orders the REST supplier made for it (1 each when all is well).
    supplier_orders: dict[str, int] | None = None
    #: Fulfillment ids in the Shopify store, one entry per fulfillment created.
    shopify_fulfillments: list[str] | None = None
    #: Message-ID of every message the SMTP server accepted (a resend shows twice).
    smtp_message_ids: list[str] | None = None
    #: Per Stripe refund made: the ``dropship_refund_id`` in its metadata.
    stripe_refunds: list[str] | None = None
    #: Order ids (str) for which a refund was asked through the API.
    refunds_asked: set[str] = field(default_factory=set)


@dataclass
class Ledger:
    counts: dict[str, int] = field(default_factory=dict)
    #: kind -> examples (at most 5 each) of what is wrong.
    problems: dict[str, list[str]] = field(default_factory=dict)
    #: Not wrong, worth knowing (e.g. an email resent with the same Message-ID).
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, kind: str, items: Iterable[Any]) -> None:
        listed = [str(i) for i in items]
        if listed:
            self.problems[kind] = [f"{len(listed)} in all", *listed[:5]]

    def __str__(self) -> str:
        lines = ["ledger: " + ("EXACT" if self.ok else "DISCREPANCIES")]
        lines.append("  counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()))
        for kind, items in self.problems.items():
            lines.append(f"  {kind}: {'; '.join(items)}")
        if self.notes:
            lines.append("  notes: " + ", ".join(f"{k}={v}" for k, v in self.notes.items()))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "problems": self.problems,
            "notes": self.notes,
        }


async def _rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.sessionmaker() as session:
        return list((await session.execute(text(sql), params)).all())


async def check(db: Database, outside: Outside) -> Ledger:
    led = Ledger()
    c = led.counts

    # Webhooks -> deliveries -> orders.
    deliveries = await _rows(
        db,
        "SELECT webhook_id, processed_at IS NOT NULL, topic, payload FROM webhook_deliveries "
        "WHERE source = 'shopify'",
    )
    stored = Counter(r[0] for r in deliveries)
    c["accepted_webhooks"] = len(outside.accepted_webhooks)
    c["deliveries"] = len(deliveries)
    led.problem("accepted_not_stored", sorted(outside.accepted_webhooks - set(stored)))
    led.problem("delivery_stored_twice", [k for k, n in stored.items() if n > 1])
    led.problem("delivery_not_accepted", sorted(set(stored) - outside.accepted_webhooks))
    led.problem("delivery_unprocessed", [r[0] for r in deliveries if not r[1]])
    wanted_orders = Counter(
        int(json.loads(r[3])["id"]) for r in deliveries if r[2] == "orders/create" and r[3]
    )
    orders = await _rows(db, "SELECT id, shopify_order_id FROM orders")
    have = Counter(int(r[1]) for r in orders if r[1] is not None)
    c["orders"] = len(orders)
    led.problem("delivery_without_order", sorted(set(wanted_orders) - set(have)))
    led.problem("order_twice", [k for k, n in have.items() if n > 1])
    led.problem("order_without_delivery", sorted(set(have) - set(wanted_orders)))

    # Routable lines -> exactly one placed purchase-order line.
    lines = await _rows(
        db,
        "SELECT ol.id, ol.sku, o.shopify_order_id, count(pol.id), "
        "  count(pol.id) FILTER (WHERE po.status = ANY(:placed)), "
        "  string_agg(po.status, ',') "
        "FROM order_lines ol JOIN orders o ON o.id = ol.order_id "
        "LEFT JOIN purchase_order_lines pol ON pol.order_line_id = ol.id "
        "LEFT JOIN purchase_orders po ON po.id = pol.purchase_order_id "
        "GROUP BY ol.id, ol.sku, o.shopify_order_id",
        placed=list(PLACED),
    )
    routable = [r for r in lines if r[1] in outside.routable_skus]
    c["routable_lines"] = len(routable)
    c["placed_po_lines"] = sum(r[4] for r in routable)
    led.problem("line_without_po_line", [f"{r[2]}/{r[1]}" for r in routable if r[3] == 0])
    led.problem("line_with_two_po_lines", [f"{r[2]}/{r[1]} x{r[3]}" for r in routable if r[3] > 1])
    led.problem(
        "po_line_not_placed", [f"{r[2]}/{r[1]}: {r[5]}" for r in routable if r[3] == 1 and not r[4]]
    )

    # The REST supplier: one order per REST purchase order.
    if outside.supplier_orders is not None:
        keys = {
            r[0]
            for r in await _rows(
                db,
                "SELECT po.idempotency_key FROM purchase_orders po "
                "JOIN suppliers s ON s.id = po.supplier_id WHERE s.connector = 'rest_json'",
            )
        }
        held = outside.supplier_orders
        c["rest_pos"] = len(keys)
        c["supplier_orders"] = sum(held.values())
        led.problem("rest_po_missing_at_supplier", sorted(keys - set(held)))
        led.problem("supplier_order_without_po", sorted(set(held) - keys))
        led.problem("supplier_order_twice", [k for k, n in held.items() if n > 1])

    # Shipments -> one Shopify fulfillment and one shipped email each.
    shipments = await _rows(
        db,
        "SELECT sh.id, count(f.id), count(f.id) FILTER (WHERE f.state = 'created'), "
        "  max(f.shopify_fulfillment_id), string_agg(f.state || ':' || "
        "  coalesce(f.last_error, ''), ',') "
        "FROM shipments sh LEFT JOIN shopify_fulfillments f ON f.shipment_id = sh.id "
        "GROUP BY sh.id",
    )
    c["shipments"] = len(shipments)
    led.problem("shipment_without_fulfillment_row", [r[0] for r in shipments if r[1] == 0])
    led.problem(
        "shipment_fulfillment_not_created",
        [f"{r[0]}: {r[4]}" for r in shipments if r[1] and not r[2]],
    )
    if outside.shopify_fulfillments is not None:
        in_store = Counter(outside.shopify_fulfillments)
        ours = [r[3] for r in shipments if r[3]]
        c["shopify_fulfillments"] = len(outside.shopify_fulfillments)
        led.problem("fulfillment_twice_in_store", [k for k, n in in_store.items() if n > 1])
        led.problem("fulfillment_missing_in_store", sorted(set(ours) - set(in_store)))
        led.problem("store_fulfillment_without_shipment", sorted(set(in_store) - set(ours)))
    emails = await _rows(
        db,
        "SELECT sh.id, count(e.id), count(e.id) FILTER (WHERE e.status = 'sent'), "
        "  max(e.message_id) "
        "FROM shipments sh LEFT JOIN emails e ON e.key = 'customer:shipped:' || sh.id::text "
        "GROUP BY sh.id",
    )
    c["shipped_emails"] = sum(r[1] for r in emails)
    led.problem("shipment_without_email", [r[0] for r in emails if r[1] == 0])
    led.problem("shipment_with_two_emails", [r[0] for r in emails if r[1] > 1])
    led.problem("shipped_email_not_sent", [r[0] for r in emails if r[1] == 1 and not r[2]])
    if outside.smtp_message_ids is not None:
        received = Counter(outside.smtp_message_ids)
        sent = {
            r[0] for r in await _rows(db, "SELECT message_id FROM emails WHERE status = 'sent'")
        }
        c["smtp_messages"] = len(outside.smtp_message_ids)
        shipped_ids = {r[3] for r in emails if r[2]}
        led.problem("sent_email_not_received", sorted(shipped_ids - set(received)))
        led.problem("received_email_unknown", sorted(set(received) - sent))
        # SMTP is at-least-once by nature (a crash between the server's 250 and our commit
        # resends); the same Message-ID lets mail clients fold the repeat.
        led.notes["smtp_resent_same_message_id"] = sum(n - 1 for n in received.values() if n > 1)

    # Refunds asked -> one refund each, succeeded, one Stripe refund each.
    refunds = await _rows(
        db, "SELECT id, order_id, status, stripe_refund_id FROM refunds ORDER BY created_at"
    )
    per_order = Counter(str(r[1]) for r in refunds)
    c["refunds_asked"] = len(outside.refunds_asked)
    c["refunds"] = len(refunds)
    led.problem("refund_missing", sorted(outside.refunds_asked - set(per_order)))
    led.problem("refund_twice", [k for k, n in per_order.items() if n > 1])
    led.problem("refund_not_asked", sorted(set(per_order) - outside.refunds_asked))
    led.problem("refund_not_succeeded", [f"{r[0]}: {r[2]}" for r in refunds if r[2] != "succeeded"])
    if outside.stripe_refunds is not None:
        at_stripe = Counter(outside.stripe_refunds)
        ours_r = {str(r[0]) for r in refunds}
        c["stripe_refunds"] = len(outside.stripe_refunds)
        led.problem("refund_missing_at_stripe", sorted(ours_r - set(at_stripe)))
        led.problem("refund_twice_at_stripe", [k for k, n in at_stripe.items() if n > 1])
        led.problem("stripe_refund_unknown", sorted(set(at_stripe) - ours_r))

    for name, sql in (
        ("exceptions_open", "SELECT count(*) FROM exception_cases WHERE resolved_at IS NULL"),
        ("outbox_rows", "SELECT count(*) FROM outbox"),
    ):
        # A column this revision names otherwise: only a note.
        with contextlib.suppress(Exception):
            led.notes[name] = int((await _rows(db, sql))[0][0])
    return led
