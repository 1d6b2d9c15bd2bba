"""A supplier's own REST/JSON API, described by settings instead of code.

Settings (``config``):

| key | default | meaning |
|---|---|---|
| ``base_url`` | required | e.g. ``https://api.supplier.example/v2`` |
| ``auth_header``, ``auth_value`` | ``Authorization``, none | the credential (value is secret) |
| ``order_path`` | ``/orders`` | POST: place an order |
| ``status_path`` | ``/orders/{reference}`` | GET: status and shipments (supplier's id, quoted) |
| ``cancel_path`` | none | POST: cancel what is still unshipped (cancel unsupported when absent) |
| ``cancel_refused_codes`` | ``[409, 422]`` | cancel answers meaning "already shipped" |
| ``stock_path`` | none | GET: ``[{"sku", "quantity", "unit_cost"?}]`` |
| ``return_path`` | none | POST: announce a return (below); none: the supplier offers nothing |
| ``idempotency_header`` | ``Idempotency-Key`` | same value on every retry of a placement |
| ``reference_field`` | ``id`` | where the supplier's order id is in its answers |
| ``status_field`` | ``status`` | where its status is; ``status_map`` maps its words to ours |
| ``field_map`` | ``{}`` | renames our request fields to the supplier's (``{"lines": "items"}``) |
| ``timeout`` | ``10`` | seconds |
| ``tracking`` | none | how to poll tracking (below); tracking unsupported when absent |

The request body, before ``field_map``: ``{"reference", "currency", "ship_to", "shipping_method",
"lines": [{"sku", "quantity", "unit_cost"}]}`` with the supplier's own SKUs.

``return_path`` (placeholders ``{reference}``, the supplier's id of the purchase order, or our
number without one, and ``{number}``, ours) is POSTed ``{"rma", "purchase_order", "reference",
"reason", "lines": [{"sku", "quantity"}]}`` (the supplier's SKUs; ``field_map`` applies) with the
idempotency header (``dropship-po-<id>-return-<rma>``, the same on every retry). Its answer may
carry ``return_address`` (an address object), ``label_url`` (an http(s) link to a prepaid
label), ``instructions`` (text) and its own id (``reference_field``); anything unreadable there is
left out, never an error.

``tracking`` (an object; at least one of ``path`` and ``batch``; the batch endpoint is used when
both are given):

| key | default | meaning |
|---|---|---|
| ``path`` | none | GET one purchase order's parcels (placeholders below) |
| ``batch.method`` | ``POST`` | ``POST`` or ``GET`` |
| ``batch.path`` | required | e.g. ``/tracking`` |
| ``batch.max_numbers`` | ``100`` | numbers per call, 1 to 100 |
| ``batch.send_as`` | ``json`` | body ``{param: [...]}`` (POST), or ``query``: ``?param=a,b`` |
| ``batch.param`` | ``numbers`` | the body field or query parameter |
| ``status_map`` | ``{}`` | the supplier's words to ours (ours pass as themselves) |
| ``fields`` | below | where things are in the answers (top-level names, no paths) |

``fields`` and their defaults: ``list`` = ``trackings`` (the parcels in an answer; an answer that
is a list is the list, a per-order answer without it is one parcel), ``number`` =
``tracking_number``, ``status`` = ``status``, ``carrier`` = ``carrier``, ``events`` = ``events``,
``event_status`` = ``status``, ``event_time`` = ``occurred_at`` (ISO 8601; no offset = UTC),
``event_description`` = ``description``, ``event_location`` = ``location``,
``estimated_delivery`` = ``estimated_delivery_at``.

``path`` placeholders, quoted: ``{reference}`` (the supplier's id of the purchase order; a parcel
whose order has none is skipped), ``{number}`` (our purchase order number), ``{tracking_number}``.
Our statuses: ``info_received``, ``in_transit``, ``out_for_delivery``, ``delivered``,
``exception``, ``returned``. An event in a word the map does not know is skipped with a log line,
never an error; so is one whose time cannot be read.

Cancelling: ``POST {cancel_path}`` (placeholders ``{reference}``: the supplier's id, else our
number; ``{number}``) with ``{"reference", "lines": [{"sku", "quantity"}]}`` (the unshipped
quantities, renamed by ``field_map``) and the idempotency header (``dropship-cancel-<id>``, the
same on every attempt). A 2xx is cancelled, unless its body's status (``status_field``, through
``status_map``) is ``shipped`` or ``delivered``; a status of ``cancel_refused_codes`` is already
shipped; 429, 408 and 5xx retry; any other answer asks the merchant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import quote, urlparse

import httpx
import structlog

from connectors.base import (
    CancelResult,
    Connector,
    ConnectorConfigError,
    PermanentConnectorError,
    PlacementResult,
    PurchaseOrderDTO,
    RetryableConnectorError,
    ReturnAuthorization,
    ReturnLineDTO,
    ShipmentDTO,
    StatusResult,
    StockLevel,
    TrackingRefDTO,
    classify_http_error,
)
from connectors.tracking import TrackingEventDTO, TrackingStatus, TrackingUpdateDTO

log = structlog.get_logger(__name__)

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
        "cancel_refused_codes",
        "stock_path",
        "return_path",
        "idempotency_header",
        "reference_field",
        "status_field",
        "field_map",
        "status_map",
        "timeout",
        "tracking",
    }
)
#: Tracking: numbers per batch call, events kept per parcel (the newest).
MAX_TRACKING_BATCH, MAX_TRACKING_EVENTS = 100, 200
_TRACKING_KEYS = frozenset({"path", "batch", "status_map", "fields"})
_BATCH_KEYS = frozenset({"method", "path", "max_numbers", "send_as", "param"})
TRACKING_FIELDS = {
    "list": "trackings",
    "number": "tracking_number",
    "status": "status",
    "carrier": "carrier",
    "events": "events",
    "event_status": "status",
    "event_time": "occurred_at",
    "event_description": "description",
    "event_location": "location",
    "estimated_delivery": "estimated_delivery_at",
}
_TRACKING_STATUSES = frozenset(TrackingStatus.ALL)
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
        for key in ("order_path", "status_path", "cancel_path", "stock_path", "return_path"):
            value = out.get(key)
            if value is not None and (
                not isinstance(value, str) or not value.startswith("/") or len(value) > _MAX_URL
            ):
                raise ConnectorConfigError(key, "must be a path starting with /")
        if out.get("return_path") is not None:
            try:
                out["return_path"].format(reference="r", number="n")
            except (KeyError, IndexError, ValueError):
                raise ConnectorConfigError(
                    "return_path", "placeholders: {reference}, {number}"
                ) from None
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
        if "tracking" in out:
            out["tracking"] = _validate_tracking(out["tracking"])
        if "cancel_refused_codes" in out:
            codes = out["cancel_refused_codes"]
            if (
                not isinstance(codes, list)
                or len(codes) > 20
                or not all(
                    isinstance(c, int) and not isinstance(c, bool) and 400 <= c <= 499
                    for c in codes
                )
            ):
                raise ConnectorConfigError(
                    "cancel_refused_codes", "a list of at most 20 HTTP 4xx statuses"
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

    # ------------------------------------------------------------------ tracking
    @property
    def _tracking(self) -> Mapping[str, Any]:
        tracking = self.config.get("tracking")
        return tracking if isinstance(tracking, dict) else {}

    @property
    def supports_tracking(self) -> bool:
        return bool(self._tracking.get("path") or self._tracking.get("batch"))

    @property
    def tracking_batch_size(self) -> int:
        batch = self._tracking.get("batch")
        if not batch:
            return 0
        return int(batch.get("max_numbers", MAX_TRACKING_BATCH))

    async def fetch_tracking(
        self, numbers: Sequence[str], refs: Mapping[str, TrackingRefDTO] | None = None
    ) -> Sequence[TrackingUpdateDTO]:
        if not self.supports_tracking:
            return await super().fetch_tracking(numbers, refs)
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            return ()
        batch = self._tracking.get("batch")
        if batch:
            size = self.tracking_batch_size
            if len(wanted) > size:
                raise PermanentConnectorError(f"tracking: at most {size} numbers per call")
            bodies = [await self._tracking_batch(batch, wanted)]
        else:
            bodies = [await self._tracking_one(n, (refs or {}).get(n)) for n in wanted]
        found: dict[str, TrackingUpdateDTO] = {}
        asked = set(wanted)
        for body in bodies:
            for update in self._parcels(body):
                if update.tracking_number in asked:
                    found[update.tracking_number] = update
        return tuple(found.values())

    async def _tracking_batch(self, batch: Mapping[str, Any], numbers: list[str]) -> Any:
        url = str(self.config["base_url"]) + str(batch["path"])
        param = str(batch.get("param") or "numbers")
        what = f"tracking of {len(numbers)} parcels"
        method = str(batch.get("method") or "POST")
        if batch.get("send_as", "json") == "json":
            response = await self._request(
                method, url, what, json={param: numbers}, headers=self._headers()
            )
        else:
            response = await self._request(
                method, url, what, params={param: ",".join(numbers)}, headers=self._headers()
            )
        return _json_any(response, what)

    async def _tracking_one(self, number: str, ref: TrackingRefDTO | None) -> Any:
        path = str(self._tracking["path"])
        params = {"tracking_number": number}
        if ref is not None:
            params["number"] = ref.po_number
            if ref.supplier_reference:
                params["reference"] = ref.supplier_reference
        try:
            url = self._url_from(path, **params)
        except KeyError as exc:  # the template needs what this parcel's order lacks
            log.warning("tracking.no_reference", tracking_number=number, missing=str(exc))
            return None
        what = f"tracking of {number}"
        try:
            response = await self._request("GET", url, what, headers=self._headers())
        except PermanentConnectorError as exc:
            # One unknown parcel (404) must not fail the others of the batch.
            log.warning("tracking.refused", tracking_number=number, error=exc.message)
            return None
        return _json_any(response, what)

    def _url_from(self, path: str, **params: str) -> str:
        quoted = {k: quote(v, safe="") for k, v in params.items()}
        return str(self.config["base_url"]) + path.format(**quoted)

    def _parcels(self, body: Any) -> list[TrackingUpdateDTO]:
        fields = {**TRACKING_FIELDS, **(self._tracking.get("fields") or {})}
        if isinstance(body, dict) and isinstance(body.get(fields["list"]), list):
            rows = body[fields["list"]]
        elif isinstance(body, list):
            rows = body
        elif isinstance(body, dict):
            rows = [body]
        else:
            rows = []
        out = []
        for row in rows:
            if isinstance(row, dict) and row.get(fields["number"]) not in (None, ""):
                out.append(self._parcel(row, fields))
        return out

    def _parcel(self, row: Mapping[str, Any], fields: Mapping[str, str]) -> TrackingUpdateDTO:
        number = str(row[fields["number"]])
        events = []
        raw_events = row.get(fields["events"])
        for raw in raw_events[-MAX_TRACKING_EVENTS:] if isinstance(raw_events, list) else ():
            if not isinstance(raw, dict):
                continue
            status = self._tracking_status(raw.get(fields["event_status"]), number)
            when = _moment(raw.get(fields["event_time"]))
            if status is None or when is None:
                if status is not None:
                    log.warning(
                        "tracking.bad_event_time",
                        tracking_number=number,
                        value=str(raw.get(fields["event_time"]))[:64],
                    )
                continue
            events.append(
                TrackingEventDTO(
                    status=status,
                    occurred_at=when,
                    description=_text(raw.get(fields["event_description"])),
                    location=_text(raw.get(fields["event_location"])),
                )
            )
        status = None
        if row.get(fields["status"]) not in (None, ""):
            status = self._tracking_status(row.get(fields["status"]), number)
        return TrackingUpdateDTO(
            tracking_number=number,
            carrier_slug=_text(row.get(fields["carrier"])),
            status=status,
            events=tuple(sorted(events, key=lambda e: e.occurred_at)),
            estimated_delivery_at=_moment(row.get(fields["estimated_delivery"])),
        )

    def _tracking_status(self, raw: Any, number: str) -> str | None:
        word = str(raw) if raw is not None else ""
        mapped = (self._tracking.get("status_map") or {}).get(word, word)
        if mapped in _TRACKING_STATUSES:
            return str(mapped)
        log.warning("tracking.unknown_status", tracking_number=number, status=word[:64])
        return None

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

    async def cancel_order(self, po: PurchaseOrderDTO, idempotency_key: str) -> CancelResult:
        path = self.config.get("cancel_path")
        if path is None:
            return await super().cancel_order(po, idempotency_key)
        what = f"cancelling {po.number}"
        try:
            url = self._url_from(
                str(path), reference=po.supplier_reference or po.number, number=po.number
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise PermanentConnectorError(
                f"{what}: cancel_path has an unknown placeholder"
            ) from exc
        body = self._rename(
            {
                "reference": po.number,
                "lines": [
                    self._rename({"sku": line.supplier_sku, "quantity": line.quantity})
                    for line in po.lines
                ],
            }
        )
        header = str(self.config.get("idempotency_header") or "Idempotency-Key")
        refused = set(self.config.get("cancel_refused_codes") or (409, 422))
        try:
            response = await self.http.request(
                "POST",
                url,
                json=body,
                headers=self._headers({header: idempotency_key}),
                timeout=float(self.config.get("timeout", 10)),
            )
        except httpx.TimeoutException as exc:
            raise RetryableConnectorError(f"{what}: supplier timed out") from exc
        except httpx.TransportError as exc:
            raise RetryableConnectorError(f"{what}: cannot reach supplier ({exc})") from exc
        if response.status_code in refused:
            error = classify_http_error(response, what)
            return CancelResult("already_shipped", error.message)
        if not response.is_success:
            raise classify_http_error(response, what)
        try:
            data = response.json()
        except ValueError:
            data = None  # an empty 2xx (204) is a plain yes
        if isinstance(data, dict) and self._status(data) in ("shipped", "delivered"):
            return CancelResult("already_shipped", f"{what}: supplier says it has shipped")
        return CancelResult("cancelled")

    async def create_return(
        self,
        po: PurchaseOrderDTO,
        lines: Sequence[ReturnLineDTO],
        rma_number: str,
        reason: str,
    ) -> ReturnAuthorization | None:
        url = self._url(
            "return_path", None, reference=po.supplier_reference or po.number, number=po.number
        )
        if url is None:
            return None
        what = f"return {rma_number} of {po.number}"
        body = self._rename(
            {
                "rma": rma_number,
                "purchase_order": po.number,
                "reference": po.supplier_reference,
                "reason": reason,
                "lines": [
                    self._rename({"sku": ln.supplier_sku, "quantity": ln.quantity}) for ln in lines
                ],
            }
        )
        header = str(self.config.get("idempotency_header") or "Idempotency-Key")
        response = await self._request(
            "POST",
            url,
            what,
            json=body,
            headers=self._headers({header: f"{po.idempotency_key}-return-{rma_number}"}),
        )
        data = _json_object(response, what)
        reference = data.get(str(self.config.get("reference_field") or "id"))
        return ReturnAuthorization(
            return_address=_address(data.get("return_address")),
            label_url=_link(data.get("label_url")),
            supplier_reference=_text(reference),
            instructions=_long_text(data.get("instructions")),
        )

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


def _validate_tracking(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConnectorConfigError("tracking", "must be an object")
    unknown = sorted(set(raw) - _TRACKING_KEYS)
    if unknown:
        raise ConnectorConfigError(f"tracking.{unknown[0]}", "unknown tracking setting")
    out = dict(raw)
    if "path" not in out and "batch" not in out:
        raise ConnectorConfigError("tracking.path", "give a per-order path, a batch, or both")
    if "path" in out:
        _check_path("tracking.path", out["path"])
        try:
            out["path"].format(reference="r", number="n", tracking_number="t")
        except (KeyError, IndexError, ValueError):
            raise ConnectorConfigError(
                "tracking.path", "placeholders: {reference}, {number}, {tracking_number}"
            ) from None
    if "batch" in out:
        batch = out["batch"]
        if not isinstance(batch, dict):
            raise ConnectorConfigError("tracking.batch", "must be an object")
        unknown = sorted(set(batch) - _BATCH_KEYS)
        if unknown:
            raise ConnectorConfigError(f"tracking.batch.{unknown[0]}", "unknown batch setting")
        batch = dict(batch)
        _check_path("tracking.batch.path", batch.get("path"))
        method = batch.setdefault("method", "POST")
        if method not in ("GET", "POST"):
            raise ConnectorConfigError("tracking.batch.method", "GET or POST")
        size = batch.setdefault("max_numbers", MAX_TRACKING_BATCH)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
            raise ConnectorConfigError(
                "tracking.batch.max_numbers", f"a whole number from 1 to {MAX_TRACKING_BATCH}"
            )
        send_as = batch.setdefault("send_as", "json")
        if send_as not in ("json", "query"):
            raise ConnectorConfigError("tracking.batch.send_as", "json or query")
        if send_as == "json" and method == "GET":
            raise ConnectorConfigError("tracking.batch.send_as", "json needs method POST")
        param = batch.setdefault("param", "numbers")
        if not isinstance(param, str) or not 0 < len(param) <= _MAX_TEXT:
            raise ConnectorConfigError(
                "tracking.batch.param", f"text of 1 to {_MAX_TEXT} characters"
            )
        out["batch"] = batch
    status_map = out.get("status_map", {})
    if not isinstance(status_map, dict) or len(status_map) > _MAX_MAP:
        raise ConnectorConfigError("tracking.status_map", f"an object of at most {_MAX_MAP} names")
    for word, ours in status_map.items():
        if ours not in _TRACKING_STATUSES:
            raise ConnectorConfigError(
                f"tracking.status_map.{str(word)[:64]}",
                f"one of {', '.join(TrackingStatus.ALL)}",
            )
    fields = out.get("fields", {})
    if not isinstance(fields, dict):
        raise ConnectorConfigError("tracking.fields", "must be an object")
    for name, value in fields.items():
        if name not in TRACKING_FIELDS:
            raise ConnectorConfigError(
                f"tracking.fields.{str(name)[:64]}", f"one of {', '.join(TRACKING_FIELDS)}"
            )
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
            raise ConnectorConfigError(
                f"tracking.fields.{name}", f"text of 1 to {_MAX_TEXT} characters"
            )
    return out


def _check_path(field: str, value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > _MAX_URL:
        raise ConnectorConfigError(field, "must be a path starting with /")


def _moment(value: Any) -> datetime | None:
    """An ISO 8601 time as UTC (no offset: UTC); None when absent or unreadable."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # "0001-01-01T00:00:00+05:00" is before year 1 in UTC
        return None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)[:_MAX_TEXT]


_ADDRESS_KEYS = (
    "name",
    "company",
    "address1",
    "address2",
    "city",
    "province_code",
    "zip",
    "country_code",
    "phone",
)
_MAX_INSTRUCTIONS = 2000


def _address(value: Any) -> dict[str, str] | None:
    """A supplier's return address: the address fields it gave, as text; None without one."""
    if not isinstance(value, dict):
        return None
    out = {k: str(value[k])[:_MAX_TEXT] for k in _ADDRESS_KEYS if value.get(k) not in (None, "")}
    return out or None


def _link(value: Any) -> str | None:
    """A label link we pass to the customer: http(s) only, bounded; anything else is dropped."""
    if not isinstance(value, str) or len(value) > 1024:
        return None
    parsed = urlparse(value)
    return value if parsed.scheme in ("http", "https") and parsed.netloc else None


def _long_text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)[:_MAX_INSTRUCTIONS]


def _json_any(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise RetryableConnectorError(
            f"{what}: supplier answered something other than JSON"
        ) from exc


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
