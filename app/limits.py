"""Every bound on an input value, defined once.

Each is far beyond what a real merchant or supplier sends, and within what the database columns
hold, so a value past one is a mistake (or an attack) refused with a 400 naming the field, never a
500 from the database or a worker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

# --------------------------------------------------------------------------- money
#: Money columns are NUMERIC(18, 4): 14 integer digits. A trillion fits with room for sums.
MAX_AMOUNT = Decimal(10**12)
#: Decimal places a money column keeps; more would be silently rounded.
MONEY_PLACES = 4

# --------------------------------------------------------------------------- integers
#: Largest quantity on one order or purchase-order line (INTEGER column; no real order is near).
MAX_LINE_QUANTITY = 100_000
#: Largest stock/inventory level a supplier reports (INTEGER column, 32-bit).
MAX_STOCK = 1_000_000_000
#: Supplier priority in the catalog (1 = preferred).
MAX_PRIORITY = 10_000
#: Days a supplier takes to ship.
MAX_LEAD_TIME_DAYS = 365
#: A parcel may be silent this long at most before the merchant calls it stale.
MAX_STALE_DAYS = 90
#: Routing rule positions (tried in ascending order).
MIN_RULE_POSITION = -1_000_000
MAX_RULE_POSITION = 1_000_000
#: Integers such as order numbers: what a signed BIGINT column holds.
MAX_ID = 2**63 - 1
#: Shopify ids (orders, lines, variants, products, customers) are the Admin API's
#: ``UnsignedInt64``: stored exact by :class:`app.db.UnsignedBigInt`.
MAX_SHOPIFY_ID = 2**64 - 1

# --------------------------------------------------------------------------- supplier limits
#: Placements per second a supplier accepts: below one per 100 s nothing sensible is left.
MIN_RATE_PER_SECOND = 0.01
MAX_RATE_PER_SECOND = 1000.0
#: Simultaneous placements at one supplier.
MAX_CONCURRENCY = 1000
#: Shipments one tracking poll cycle (a minute) leases at one supplier, whatever its rate.
MAX_TRACKING_POLLS_PER_CYCLE = 200_000
#: ``tracking.stale_after_days``: a parcel that has not moved for this many days is stale.
MAX_STALE_AFTER_DAYS = 365
#: ``consolidation_tolerance``: 0.05 = 5 % more for fewer suppliers; 1 = double.
MAX_TOLERANCE = Decimal("1")

# --------------------------------------------------------------------------- text and lists
#: A name, SKU, reference, address field... (VARCHAR(255) columns).
MAX_SHORT_TEXT = 255
#: A product title, variant title.
MAX_TITLE = 512
#: Free text: an order note, a reason, a description.
MAX_LONG_TEXT = 10_000
#: A URL we store (a shipment's tracking link: the column's size). Connector base URLs are
#: bounded by their connector (``connectors`` knows nothing of the app).
MAX_URL = 1024
#: An email address (RFC 5321: 64 + 1 + 255, rounded as the usual 320).
MAX_EMAIL = 320
#: A tracking number as given (printed labels space it out): the longest format is 34
#: characters, 69 with a space between each; anything longer is no tracking number.
MAX_TRACKING_NUMBER = 128
#: A customer email template's subject and its text or HTML body, as the merchant writes them
#: (the HTML has inline styles, hence more room than free text).
MAX_TEMPLATE_SUBJECT = 1_000
MAX_TEMPLATE_BODY = 100_000
#: What one rendered template may produce (a template that loops itself huge is refused).
MAX_RENDERED = 1_000_000
#: Any string anywhere in an input, nested ones included (connector settings...).
MAX_ANY_TEXT = MAX_LONG_TEXT
#: Lines of one order, shipment, rejection, simulation.
MAX_LINES = 500
#: Countries, SKUs in one list (``ships_to``, ``match_countries``, ``match_skus``).
MAX_LIST = 1000
#: Keys in an object given as settings (connector ``config``, ``shipping_rates``, maps in them).
MAX_KEYS = 300
#: Items of any list or object nested in an input, counted together.
MAX_NESTED_ITEMS = 10_000
#: Rows per CSV file, per inventory call.
MAX_ROWS = 10_000
#: Outbound webhook endpoints of one merchant (each event is sent to each of them).
MAX_WEBHOOK_ENDPOINTS = 20

# --------------------------------------------------------------------------- dates
#: Datetimes given to us (shipments, tracking events, list filters) lie in this range.
MIN_DATETIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_DATETIME = datetime(2100, 1, 1, tzinfo=UTC)

# -- request bodies -------------------------------------------------------------------------------
#: Largest request body any API endpoint reads (bytes); larger ones get a 413 before being
#: buffered.
MAX_REQUEST_BODY = 8 * 1024 * 1024
#: Largest webhook body read (bytes). Shopify's order payloads are a few KiB (a large order some
#: hundred); a bigger body is refused with 413 before it is buffered.
MAX_WEBHOOK_BODY = 4 * 1024 * 1024
