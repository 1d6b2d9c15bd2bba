"""Merchant API: the customer email templates, per event and language, and their preview."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.deps import READ_ONLY, provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.db import DbSession
from app.merchants.models import Merchant
from app.merchants.settings import LANGUAGES
from app.notifications import service
from app.notifications.render import KINDS
from app.notifications.schemas import PreviewIn, PreviewOut, TemplateIn, TemplateOut
from app.services import Services

Locale = Annotated[
    str | None,
    QueryParameter(
        description=f"{' or '.join(LANGUAGES)}; default: the store's `notifications.default_locale`"
    ),
]
_EVENT = f"No such customer email: one of {', '.join(KINDS)}."
_SANDBOX = (
    "Templates are Jinja2, rendered in its sandbox with strict variables: a template that "
    "does not compile, names a variable the sample order lacks or reaches for something the "
    "sandbox forbids (`''.__class__`) is refused with a 400 naming the part (`subject`, "
    "`text`, `html`) and the line (`extra.line`). Variables: `shop` (name, logo_url, color, "
    "reply_to), `order` (name, placed_at, total, subtotal, shipping, tax, discounts, currency, "
    "customer_name, lines, shipping_address, tracking_url), `shipment` (carrier, "
    "tracking_number, tracking_url, shipped_at, estimated_delivery, status, lines; null for "
    "the emails not about a parcel), `event` (status, occurred_at, description, location, "
    "reason), `cancellation` (lines, partial; cancelled), `refund` (amount, currency, reason, "
    "lines, shipping; refund_issued), `rma` (number, reason, exchange, lines, instructions, "
    "return_address, label_url, rejection_reason, condition; the return_* emails), "
    "`tracking_url` (the order's tracking page), `locale`; those of other emails are null. "
    "Money and dates come formatted for the customer's language."
)


class NotificationTemplateController(Controller):
    path = "/api/v1/notifications/templates"
    tags = ["notifications"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/{event:str}",
        summary="A customer email's template (yours, or the one shipped)",
        **operation(
            "getNotificationTemplate",
            "The template of a customer email (`order_confirmation`, `shipped`, "
            "`out_for_delivery`, `delivered`, `delayed`, `cancelled`, `refund_issued`, "
            "`return_requested`, `return_approved`, `return_rejected`, `return_received`) in "
            "one language: yours "
            "(`customized: true`) or the shipped default.",
            api="merchant",
            not_found=_EVENT,
        ),
    )
    async def get_template(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        event: FromPath[str],
        locale: Locale = None,
    ) -> TemplateOut:
        view = await service.template(db_session, merchant, event, locale)
        return TemplateOut.of(view.kind, view.locale, view.source, view.updated_at)

    @put(
        "/{event:str}",
        summary="Replace a customer email's template",
        **operation(
            "putNotificationTemplate",
            "Your own subject, plain text and HTML for a customer email in one language, "
            "checked by rendering a sample order first. " + _SANDBOX,
            api="merchant",
            method="PUT",
            not_found=_EVENT,
        ),
    )
    async def put_template(
        self,
        db_session: NamedDependency[DbSession],
        services: NamedDependency[Services],
        merchant: NamedDependency[Merchant],
        event: FromPath[str],
        data: JSONBody[TemplateIn],
        locale: Locale = None,
    ) -> TemplateOut:
        view = await service.save_template(
            db_session, merchant, event, locale, data.source(), services.settings.public_url
        )
        return TemplateOut.of(view.kind, view.locale, view.source, view.updated_at)

    @delete(
        "/{event:str}",
        status_code=204,
        summary="Go back to the shipped template",
        **operation(
            "resetNotificationTemplate",
            "Forget your template of this email in this language: the shipped one is used "
            "again. Harmless when there is none.",
            api="merchant",
            method="DELETE",
            not_found=_EVENT,
        ),
    )
    async def reset_template(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        event: FromPath[str],
        locale: Locale = None,
    ) -> None:
        await service.reset_template(db_session, merchant, event, locale)

    @post(
        "/{event:str}/preview",
        status_code=200,
        summary="Render a customer email with a sample order",
        opt={READ_ONLY: True},
        **operation(
            "previewNotificationTemplate",
            "The email rendered with a sample order and your branding: the stored template, "
            "or the parts you post instead (`subject`, `text`, `html`, each optional). " + _SANDBOX,
            api="merchant",
            method="POST",
            not_found=_EVENT,
        ),
    )
    async def preview(
        self,
        db_session: NamedDependency[DbSession],
        services: NamedDependency[Services],
        merchant: NamedDependency[Merchant],
        event: FromPath[str],
        data: JSONBody[PreviewIn | None] = None,
        locale: Locale = None,
    ) -> PreviewOut:
        parts = {
            "subject": data.subject if data else None,
            "text": data.text if data else None,
            "html": data.html if data else None,
        }
        kind, language, rendered = await service.preview(
            db_session, merchant, event, locale, parts, services.settings.public_url
        )
        return PreviewOut.of(kind, language, rendered)
