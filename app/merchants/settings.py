"""The merchant's settings: one typed schema, parsed in one place.

They are stored as JSON on ``Merchant.settings``; every reader goes through
:func:`settings_of` (a stored value that no longer fits the schema falls back to the default,
with a warning, instead of failing the order that reads it) and every writer through
:func:`save`. Later settings (branding, languages, return policy...) are added here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
import structlog
from msgspec import Meta

from app import limits
from app.inputs import Input
from app.merchants.models import Merchant

log = structlog.get_logger(__name__)

#: Financial statuses that let an order proceed unless the merchant says otherwise.
DEFAULT_ROUTABLE_PAYMENT = ("paid", "authorized")
DEFAULT_TOLERANCE = Decimal("0.05")


class RoutingSettings(Input, kw_only=True):
    """``auto_route``: send valid orders to suppliers at once (else they wait in
    ``ready_to_route``). ``consolidation_tolerance``: how much more (0.05 = 5 %) the merchant
    accepts to pay for fewer suppliers per order."""

    auto_route: bool = True
    consolidation_tolerance: Annotated[
        Decimal, Meta(description=f"from 0 to {limits.MAX_TOLERANCE}")
    ] = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        super().__post_init__()
        tolerance = self.consolidation_tolerance
        if not tolerance.is_finite() or not 0 <= tolerance <= limits.MAX_TOLERANCE:
            raise ValueError(
                f"consolidation_tolerance: between 0 and {limits.MAX_TOLERANCE} (0.05 = 5 %)"
            )


class MerchantSettings(msgspec.Struct, kw_only=True):
    routing: RoutingSettings = msgspec.field(default_factory=RoutingSettings)
    #: Orders in another financial status wait for payment (``validation_failed``).
    routable_financial_statuses: Annotated[
        tuple[str, ...], Meta(min_length=1, max_length=limits.MAX_LIST)
    ] = DEFAULT_ROUTABLE_PAYMENT


def parse(raw: dict[str, Any] | None) -> MerchantSettings:
    """Stored JSON to settings; each section that does not fit keeps its default."""
    raw = raw or {}
    sections: dict[str, Any] = {}
    for name in MerchantSettings.__struct_fields__:
        if name not in raw:
            continue
        try:
            parsed = msgspec.convert({name: raw[name]}, MerchantSettings, strict=False)
            sections[name] = getattr(parsed, name)
        except msgspec.ValidationError as exc:
            log.warning("merchant.settings_invalid", section=name, error=str(exc))
    return MerchantSettings(**sections)


def settings_of(merchant: Merchant | None) -> MerchantSettings:
    return parse(merchant.settings if merchant is not None else None)


def save(merchant: Merchant, settings: MerchantSettings) -> None:
    """Store the settings (the caller's transaction commits)."""
    merchant.settings = msgspec.to_builtins(settings)
