"""Suppliers who pull: they list their purchase orders through the supplier API
(``GET /supplier/v1/orders``) and report acceptance, shipments and tracking back through it.
Placing an order only makes it visible to them, and (unless ``email_notice`` is false) asks for
a notice to the supplier's contact email, sent once per purchase order. A cancellation is
likewise shown to them (``cancellation_requested_at``) and confirmed or refused by them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import (
    CancelResult,
    Connector,
    ConnectorConfigError,
    PlacementResult,
    PurchaseOrderDTO,
)


class PortalConnector(Connector):
    kind: ClassVar[str] = "portal"
    pull_based: ClassVar[bool] = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(config) - {"email_notice"})
        if unknown:
            raise ConnectorConfigError(unknown[0], "unknown setting for a portal supplier")
        notice = config.get("email_notice", True)
        if not isinstance(notice, bool):
            raise ConnectorConfigError("email_notice", "must be true or false")
        return {"email_notice": notice}

    async def place_order(self, po: PurchaseOrderDTO) -> PlacementResult:
        return PlacementResult(
            status="placed", notify_supplier=bool(self.config.get("email_notice", True))
        )

    async def cancel_order(self, po: PurchaseOrderDTO, idempotency_key: str) -> CancelResult:
        # The supplier sees ``cancellation_requested_at`` in its order listing and answers
        # through the supplier API (``POST /supplier/v1/orders/{id}/cancellation``).
        return CancelResult("pending", "awaiting the supplier's answer in the supplier API")
