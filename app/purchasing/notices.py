"""The email telling a supplier that a purchase order awaits it (portal suppliers)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.mail.service import queue_email
from app.merchants.models import Merchant
from app.orders.models import Order
from app.purchasing.models import PurchaseOrder
from app.purchasing.service import to_dto
from app.settings import Settings
from app.suppliers.models import Supplier
from app.timeline.service import record
from connectors.base import AddressDTO

KIND = "supplier_po_notice"


def address_lines(a: AddressDTO) -> list[str]:
    city = " ".join(p for p in (a.zip, a.city, a.province_code) if p)
    parts = [a.name, a.company, a.address1, a.address2, city, a.country_code]
    if a.phone:
        parts.append(f"phone {a.phone}")
    return [p for p in parts if p]


async def queue_supplier_notice(
    session: AsyncSession, settings: Settings, po: PurchaseOrder, supplier: Supplier, order: Order
) -> None:
    """Queue the notice (once per purchase order) and say so on the order's timeline."""
    if not supplier.contact_email:
        record(
            session,
            order,
            "purchase_order.notice_skipped",
            f"{po.number}: {supplier.name} has no contact email, no notice sent",
            purchase_order_id=str(po.id),
        )
        return
    merchant = await session.get(Merchant, po.merchant_id)
    assert merchant is not None
    dto = to_dto(po)
    email_id = await queue_email(
        session,
        merchant_id=po.merchant_id,
        key=f"po-notice:{po.id}",
        kind=KIND,
        to=supplier.contact_email,
        sender=settings.mail_from,
        sender_name=merchant.shop_domain,
        template=KIND,
        context={
            "shop": merchant.shop_domain,
            "supplier_name": supplier.name,
            "po": dto,
            "ship_to": address_lines(dto.ship_to),
            "api_base": f"{settings.public_url.rstrip('/')}/supplier/v1",
        },
        order_id=order.id,
        purchase_order_id=po.id,
    )
    if email_id is not None:
        record(
            session,
            order,
            "purchase_order.notice_queued",
            f"{po.number}: notice to {supplier.contact_email} queued",
            purchase_order_id=str(po.id),
            email_id=str(email_id),
        )
