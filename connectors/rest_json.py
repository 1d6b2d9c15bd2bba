"""A supplier's own REST/JSON API, described by settings instead of code.

Settings (``config``):

| key | default | meaning |
|---|---|---|
| ``base_url`` | required | e.g. ``https://api.supplier.example/v2`` |
| ``auth_header``, ``auth_value`` | ``Authorization``, none | the credential (value is secret) |
| ``order_path`` | ``/orders`` | POST: place an order |
| ``status_path`` | ``/orders/{reference}`` | GET: status and shipments (supplier's id, quoted) |
| ``cancel_path`` | none | POST: cancel (cancel unsupported when absent) |
| ``stock_path`` | none | GET: ``[{"sku", "quantity", "unit_cost"?}]`` |
| ``idempotency_header`` | ``Idempotency-Key`` | same value on every retry of a placement |
| ``reference_field`` | ``id`` | where the supplier's order id is in its answers |
| ``status_field`` | ``status`` | where its status is; ``status_map`` maps its words to ours |
| ``field_map`` | ``{}`` | renames our request fields to the supplier's (``{"lines": "items"}``) |
| ``timeout`` | ``10`` | seconds |

The request body, before ``field_map``: ``{"reference", "currency", "ship_to", "shipping_method",
"lines": [{"sku", "quantity", "unit_cost"}]}`` with the supplier's own SKUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import quote, urlparse

import httpx

from connectors.base import (
    Connector,
    ConnectorConfigError,
    PermanentConnectorError,
    PlacementResult,
    PurchaseOrderDTO,
    RetryableConnectorError,
    ShipmentDTO,
    StatusResult,
    StockLevel,
    classify_http_error,
)

#: Bounds of the settings (the same as ``app.limits``; connectors do not depend on the app).
_MIN_TIMEOUT, _MAX_TIMEOUT = 0.1, 120.0
_MAX_URL, _MAX_TEXT, _MAX_MAP = 2048, 255, 300
_SETTINGS = frozenset(
    {
        "base_url",
        "auth_header",
        "auth_value",
        "order_path",
        "status_path",
        "cancel_path",
        "stock_path",
        "idempotency_header",
        "reference_field",
        "status_field",
        "field_map",
        "status_map",
        "timeout",
    }
)
_OUR_STATUSES = {"placed", "accepted", "rejected", "cancelled", "shipped", "delivered"}


class RestJsonConnector(Connector):
    kind: ClassVar[str] = "rest_json"

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(config) - _SETTINGS)
        if unknown:
            raise ConnectorConfigError(unknown[0], "unknown setting for a rest_json supplier")
        out = dict(config)
        base = out.get("base_url")
        if (
            not isinstance(base, str)
            or len(base) > _MAX_URL
            or urlparse(base).scheme not in ("http", "https")
            or not urlparse(base).netloc
        ):
            raise ConnectorConfigError("base_url", "an http(s) URL is required")
        out["base_url"] = base.rstrip("/")
        for key in ("order_path", "status_path", "cancel_path", "stock_path"):
            value = out.get(key)
            if value is not None and (
                not isinstance(value, str) or not value.startswith("/") or len(value) > _MAX_URL
            ):
                raise ConnectorConfigError(key, "must be a path starting with /")
        for key in ("auth_header", "auth_value", "idempotency_header", "reference_field"):
            value = out.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT):
                raise ConnectorConfigError(key, f"must be text of at most {_MAX_TEXT} characters")
        if "status_field" in out and (
            not isinstance(out["status_field"], str) or len(out["status_field"]) > _MAX_TEXT
        ):
            raise ConnectorConfigError("status_field", f"text of at most {_MAX_TEXT} characters")
        for key in ("field_map", "status_map"):
            if key not in out:
                continue
            mapping = out[key]
            if not isinstance(mapping, dict):
                raise ConnectorConfigError(key, "must be an object")
            if len(mapping) > _MAX_MAP or not all(
                isinstance(v, str) and len(v) <= _MAX_TEXT for v in mapping.values()
            ):
                raise ConnectorConfigError(
                    key, f"at most {_MAX_MAP} names, each mapped to a name (text)"
                )
        timeout = out.get("timeout", 10)
        # bool is an int to Python; 1e-300 s would fail every call as a timeout.
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not _MIN_TIMEOUT <= timeout <= _MAX_TIMEOUT
        ):
            raise ConnectorConfigError(
                "timeout", f"seconds from {_MIN_TIMEOUT} to {_MAX_TIMEOUT:g}"
            )
        return out

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        return frozenset({"auth_value"})

    # ------------------------------------------------------------------ helpers
    def _url(self, key: str, default: str | None, **params: str) -> str | None:
        path = self.config.get(key, default)
        if path is None:
            return None
        # The supplier's reference is data: quoted, so it can never become a path (or query).
        quoted = {k: quote(v, safe="") for k, v in params.items()}
        return str(self.config["base_url"]) + str(path).format(**quoted)

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.get("auth_value"):
            headers[str(self.config.get("auth_header") or "Authorization")] = str(
                self.config["auth_value"]
            )
        headers.update(extra or {})
        return headers

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(
                method, url, timeout=float(self.config.get("timeout", 10)), **kwargs
            )
        except httpx.TimeoutException as exc:
            raise RetryableConnectorError(f"{what}: supplier timed out") from exc
        except httpx.TransportError as exc:
            raise RetryableConnectorError(f"{what}: cannot reach supplier ({exc})") from exc
        if response.is_success:
            return response
        raise classify_http_error(response, what)

    def _rename(self, data: dict[str, Any]) -> dict[str, Any]:
        mapping: Mapping[str, str] = self.config.get("field_map") or {}
        return {mapping.get(k, k): v for k, v in data.items()}

    def _status(self, body: Mapping[str, Any]) -> str:
        raw = str(body.get(str(self.config.get("status_field") or "status")) or "placed")
        mapped = (self.config.get("status_map") or {}).get(raw, raw)
        return mapped if mapped in _OUR_STATUSES else "placed"

    # ------------------------------------------------------------------ interface
    async def place_order(self, po: PurchaseOrderDTO) -> PlacementResult:
        body = self._rename(
            {
                "reference": po.number,
                "currency": po.currency,
                "shipping_method": po.shipping_method,
                "ship_to": self._rename(
                    {k: v for k, v in po.ship_to.__dict__.items() if v is not None}
                ),
                "lines": [
                    self._rename(
                        {
                            "sku": line.supplier_sku,
                            "quantity": line.quantity,
                            "unit_cost": str(line.unit_cost),
                        }
                    )
                    for line in po.lines
                ],
            }
        )
        url = self._url("order_path", "/orders")
        assert url is not None
        header = str(self.config.get("idempotency_header") or "Idempotency-Key")
        response = await self._request(
            "POST",
            url,
            f"placing {po.number}",
            json=body,
            headers=self._headers({header: po.idempotency_key}),
        )
        data = _json_object(response, f"placing {po.number}")
        reference = data.get(str(self.config.get("reference_field") or "id"))
        status = self._status(data)
        if status == "rejected":
            raise PermanentConnectorError(
                f"placing {po.number}: supplier rejected it: {data.get('message') or data}"
            )
        return PlacementResult(
            status="accepted" if status == "accepted" else "placed",
            supplier_reference=None if reference is None else str(reference),
            raw=data,
        )

    async def fetch_status(self, po: PurchaseOrderDTO) -> StatusResult | None:
        if not po.supplier_reference:
            return None
        url = self._url("status_path", "/orders/{reference}", reference=po.supplier_reference)
        assert url is not None
        response = await self._request(
            "GET", url, f"status of {po.number}", headers=self._headers()
        )
        data = _json_object(response, f"status of {po.number}")
        what = f"status of {po.number}"
        shipments = []
        for i, raw in enumerate(data.get("shipments") or []):
            if isinstance(raw, dict):
                shipments.append(
                    ShipmentDTO(
                        carrier=_str(raw.get("carrier")),
                        tracking_number=_str(raw.get("tracking_number")),
                        tracking_url=_str(raw.get("tracking_url")),
                        lines=tuple(
                            (
                                str(x.get("sku")),
                                _whole(
                                    x.get("quantity", 0),
                                    f"{what}: shipments[{i}].lines[{j}].quantity",
                                ),
                            )
                            for j, x in enumerate(raw.get("lines") or [])
                            if isinstance(x, dict) and x.get("sku")
                        ),
                    )
                )
        return StatusResult(status=self._status(data), shipments=tuple(shipments))

    async def cancel_order(self, po: PurchaseOrderDTO) -> bool:
        url = self._url("cancel_path", None, reference=po.supplier_reference or po.number)
        if url is None:
            return await super().cancel_order(po)
        await self._request("POST", url, f"cancelling {po.number}", headers=self._headers())
        return True

    async def fetch_stock(self, skus: tuple[str, ...]) -> tuple[StockLevel, ...]:
        url = self._url("stock_path", None)
        if url is None:
            return ()
        response = await self._request("GET", url, "stock", headers=self._headers())
        try:
            rows = response.json()
        except ValueError as exc:
            raise PermanentConnectorError(
                "stock: supplier answered something other than JSON"
            ) from exc
        wanted = set(skus)
        out = []
        for i, row in enumerate(rows if isinstance(rows, list) else []):
            if not isinstance(row, dict) or not row.get("sku"):
                continue
            if not wanted or row["sku"] in wanted:
                cost = row.get("unit_cost")
                out.append(
                    StockLevel(
                        sku=str(row["sku"]),
                        quantity=_whole(row.get("quantity", 0), f"stock: [{i}].quantity"),
                        unit_cost=None
                        if cost is None
                        else _amount(cost, f"stock: [{i}].unit_cost"),
                    )
                )
        return tuple(out)


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        # The supplier took the request but answered garbage: retrying with the same
        # idempotency key is safe and may get a proper answer.
        raise RetryableConnectorError(
            f"{what}: supplier answered something other than JSON"
        ) from exc
    if not isinstance(data, dict):
        raise RetryableConnectorError(f"{what}: supplier answered a non-object")
    return data


def _whole(value: Any, what: str) -> int:
    """A supplier's malformed number is a connector error, never a crash of the caller."""
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PermanentConnectorError(f"{what}: {value!r} is not a whole number") from exc


def _amount(value: Any, what: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise PermanentConnectorError(f"{what}: {value!r} is not an amount") from exc


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
