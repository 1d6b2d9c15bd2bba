"""``dropship demo`` runs the whole lifecycle from a fresh process and prints it."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_demo_takes_one_order_from_webhook_to_delivered() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    done = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "storefront  orders/create webhook for order #1001 (signed, 2 lines)",
        "supplier    sees purchase order 1001-1 and accepts it",
        "Timeline of order #1001",
        "purchase order 1001-1: accepted -> shipped: UPS 1Z999AA10123456784",
        "shipped -> delivered: every parcel delivered",
        "Tracking page: http://127.0.0.1:8000/track/",
    ):
        assert line in out, out
    steps = [ln.split()[1] for ln in out.splitlines() if ln.startswith("  ") and ":" in ln[:12]]
    assert steps.index("order.received") < steps.index("status.routed")
    assert steps.index("status.shipped") < steps.index("shipment.delivered")
    assert steps.index("shipment.delivered") < steps.index("status.delivered")
    calls = out.split("Shopify Admin API calls", 1)[1].split("Tracking page:", 1)[0]
    operations = [ln.split()[0] for ln in calls.splitlines()[1:] if ln.strip()]
    assert operations == [
        "OrderFulfillmentOrders",
        "FulfillmentCreate",
        "FulfillmentEventCreate",
        "FulfillmentEventCreate",
        "FulfillmentEventCreate",
    ]
    emails = out.split("Emails written", 1)[1].split("Shopify Admin API calls", 1)[0]
    sent = [ln.split()[:2] for ln in emails.splitlines()[1:] if ln.strip()]
    assert sent == [["sent", "shipped"], ["sent", "out_for_delivery"], ["sent", "delivered"]]
    assert "to ada@example.com: Your order #1001 is on its way" in emails
