"""Every table, imported in one place for Alembic's autogenerate and for tests."""

from app.aggregator.models import TrackingRegistration
from app.cancellations.models import OrderCancellation, PurchaseOrderCancellation
from app.credits.models import SupplierCredit
from app.db import Base
from app.events.models import EventReaction, LifecycleEvent
from app.exceptions.models import ExceptionCase
from app.fulfillment.models import ShopifyFulfillment, ShopifyFulfillmentEvent, ShopifySyncStop
from app.idempotency.models import IdempotencyRecord
from app.jobs.models import OutboxMessage, PeriodicRun
from app.mail.models import OutgoingEmail
from app.merchants.models import ApiToken, Merchant
from app.notifications.models import NotificationTemplate
from app.orders.models import Customer, Order, OrderLine
from app.outbound.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from app.purchasing.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
    TrackingEvent,
)
from app.refunds.models import Refund, StripeConnection
from app.returns.models import Return, ReturnLine
from app.routing.models import LineExclusion, RoutingRule
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.models import OrderEvent
from app.tracking.models import TrackingAlert, TrackingPoll
from app.webhooks.models import WebhookDelivery

__all__ = [
    "ApiToken",
    "Base",
    "Customer",
    "DeliveryAttempt",
    "EndpointDelivery",
    "EventReaction",
    "ExceptionCase",
    "IdempotencyRecord",
    "LifecycleEvent",
    "LineExclusion",
    "Merchant",
    "NotificationTemplate",
    "Order",
    "OrderCancellation",
    "OrderEvent",
    "OrderLine",
    "OutboxMessage",
    "OutgoingEmail",
    "PeriodicRun",
    "PurchaseOrder",
    "PurchaseOrderCancellation",
    "PurchaseOrderLine",
    "Refund",
    "Return",
    "ReturnLine",
    "RoutingRule",
    "Shipment",
    "ShipmentLine",
    "ShopifyFulfillment",
    "ShopifyFulfillmentEvent",
    "ShopifySyncStop",
    "StripeConnection",
    "Supplier",
    "SupplierCredit",
    "SupplierProduct",
    "TrackingAlert",
    "TrackingEvent",
    "TrackingPoll",
    "TrackingRegistration",
    "WebhookDelivery",
    "WebhookEndpoint",
]
