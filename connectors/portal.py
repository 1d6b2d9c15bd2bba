"""Suppliers who pull: they list their purchase orders through the supplier API
(``GET /supplier/v1/orders``) and report acceptance, shipments and tracking back through it.
Placing an order only makes it visible to them."""

from __future__ import annotations

from typing import ClassVar

from connectors.base import Connector, PlacementResult, PurchaseOrderDTO


class PortalConnector(Connector):
    kind: ClassVar[str] = "portal"
    pull_based: ClassVar[bool] = True

    async def place_order(self, po: PurchaseOrderDTO) -> PlacementResult:
        return PlacementResult(status="placed")
