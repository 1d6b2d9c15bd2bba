"""Shopify webhook topics this service acts on."""

ORDERS_CREATE = "orders/create"
ORDERS_UPDATED = "orders/updated"
ORDERS_CANCELLED = "orders/cancelled"
APP_UNINSTALLED = "app/uninstalled"
CUSTOMERS_DATA_REQUEST = "customers/data_request"
CUSTOMERS_REDACT = "customers/redact"
SHOP_REDACT = "shop/redact"

HANDLED_TOPICS = frozenset(
    {
        ORDERS_CREATE,
        ORDERS_UPDATED,
        ORDERS_CANCELLED,
        APP_UNINSTALLED,
        CUSTOMERS_DATA_REQUEST,
        CUSTOMERS_REDACT,
        SHOP_REDACT,
    }
)

#: Topics still accepted after uninstall (privacy requests arrive up to 48 hours later).
INACTIVE_SHOP_TOPICS = frozenset(
    {APP_UNINSTALLED, CUSTOMERS_DATA_REQUEST, CUSTOMERS_REDACT, SHOP_REDACT}
)
