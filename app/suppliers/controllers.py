"""Merchant API: suppliers, their connector settings and their catalog."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, csv_body, operation
from app.api.pagination import DEFAULT_LIMIT, Page
from app.api.uploads import csv_text
from app.db import DbSession
from app.idempotency.middleware import SECRET_FIELDS
from app.merchants.models import Merchant
from app.services import Services
from app.suppliers import service
from app.suppliers.models import Supplier, SupplierProduct
from app.suppliers.schemas import (
    CatalogReport,
    CatalogRow,
    ProductIn,
    ProductOut,
    SupplierCreated,
    SupplierIn,
    SupplierOut,
    SupplierPatch,
)
from app.suppliers.service import CATALOG_HEADER


def supplier_out(services: Services, s: Supplier) -> SupplierOut:
    return SupplierOut(
        id=s.id,
        name=s.name,
        connector=s.connector,
        status=s.status,
        config=service.public_config(services.box, s),
        contact_email=s.contact_email,
        ship_from_country=s.ship_from_country,
        shipping_rates=s.shipping_rates,
        rate_limit_per_second=s.rate_limit_per_second,
        max_concurrency=s.max_concurrency,
        created_at=s.created_at,
    )


def product_out(p: SupplierProduct) -> ProductOut:
    return ProductOut(
        id=p.id,
        supplier_id=p.supplier_id,
        sku=p.sku,
        supplier_sku=p.supplier_sku,
        unit_cost=p.unit_cost,
        currency=p.currency,
        stock=p.stock,
        lead_time_days=p.lead_time_days,
        ships_to=list(p.ships_to),
        priority=p.priority,
        updated_at=p.updated_at,
    )


#: The API key in these answers is shown once: an ``Idempotency-Key`` replay answers without it.
_KEY_SHOWN_ONCE = {
    SECRET_FIELDS: {
        "api_key": "the API key is shown only in the first answer and is not kept; if it was "
        "lost, issue a new one with POST /api/v1/suppliers/{id}/rotate-key (new Idempotency-Key)"
    }
}


def _found(supplier: Supplier | None, supplier_id: uuid.UUID) -> Supplier:
    if supplier is None:
        raise NotFoundException(f"supplier {supplier_id} not found")
    return supplier


class SupplierController(Controller):
    path = "/api/v1/suppliers"
    tags = ["suppliers"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="List suppliers, oldest first (cursor-paginated)",
        **operation(
            "listSuppliers",
            "Your suppliers, oldest first, with their connector settings (secrets masked).",
            api="merchant",
        ),
    )
    async def list_suppliers(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[SupplierOut]:
        page = await service.list_suppliers(db_session, merchant.id, cursor=cursor, limit=limit)
        return page.map(lambda s: supplier_out(services, s))

    @post(
        "/",
        status_code=201,
        summary="Create a supplier; its API key is shown once",
        opt=_KEY_SHOWN_ONCE,
        **operation(
            "createSupplier",
            "Add a supplier and how purchase orders reach it (`portal`: it works them in the "
            "supplier API, by default with an email notice; `rest_json`: its own HTTP API). "
            "The answer carries the supplier's API key, shown this once: give it to the supplier.",
            api="merchant",
            method="POST",
        ),
    )
    async def create(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        data: JSONBody[SupplierIn],
    ) -> SupplierCreated:
        supplier, key = await service.create_supplier(
            db_session,
            services.box,
            merchant.id,
            name=data.name,
            connector=data.connector,
            config=data.config,
            contact_email=data.contact_email,
            ship_from_country=data.ship_from_country,
            shipping_rates=data.shipping_rates,
            rate_limit_per_second=data.rate_limit_per_second,
            max_concurrency=data.max_concurrency,
        )
        return SupplierCreated(supplier=supplier_out(services, supplier), api_key=key)

    @get(
        "/{supplier_id:uuid}",
        summary="One supplier (secrets masked)",
        **operation(
            "getSupplier",
            "One of your suppliers with its connector settings (secrets masked).",
            api="merchant",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No supplier with this id in your store.",
        ),
    )
    async def get_one(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        supplier_id: FromPath[uuid.UUID],
    ) -> SupplierOut:
        supplier = await service.get_supplier(db_session, merchant.id, supplier_id)
        return supplier_out(services, _found(supplier, supplier_id))

    @patch(
        "/{supplier_id:uuid}",
        summary="Change status, settings, rates or limits",
        **operation(
            "updateSupplier",
            "Change a supplier's status, connector settings, contact, shipping rates or rate "
            "limits; only the fields sent change. Masked secrets sent back unchanged keep "
            "their stored value.",
            api="merchant",
            method="PATCH",
            not_found="No supplier with this id in your store.",
        ),
    )
    async def update(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        supplier_id: FromPath[uuid.UUID],
        data: JSONBody[SupplierPatch],
    ) -> SupplierOut:
        supplier = await service.update_supplier(
            db_session,
            services.box,
            merchant.id,
            supplier_id,
            status=data.status,
            config=data.config,
            contact_email=data.contact_email,
            ship_from_country=data.ship_from_country,
            shipping_rates=data.shipping_rates,
            rate_limit_per_second=data.rate_limit_per_second,
            max_concurrency=data.max_concurrency,
        )
        return supplier_out(services, _found(supplier, supplier_id))

    @post(
        "/{supplier_id:uuid}/rotate-key",
        status_code=200,
        summary="Issue a new API key",
        opt=_KEY_SHOWN_ONCE,
        **operation(
            "rotateSupplierKey",
            "Issue a new API key for a supplier (shown this once); the old key stops working "
            "at once.",
            api="merchant",
            method="POST",
            not_found="No supplier with this id in your store.",
        ),
    )
    async def rotate(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        supplier_id: FromPath[uuid.UUID],
    ) -> SupplierCreated:
        rotated = await service.rotate_key(db_session, merchant.id, supplier_id)
        if rotated is None:
            raise NotFoundException(f"supplier {supplier_id} not found")
        supplier, key = rotated
        return SupplierCreated(supplier=supplier_out(services, supplier), api_key=key)


class SupplierProductController(Controller):
    path = "/api/v1/supplier-products"
    tags = ["catalog"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="The catalog: merchant SKU -> supplier offers (cursor-paginated)",
        **operation(
            "listSupplierProducts",
            "Your catalog: for each of your SKUs, the suppliers that offer it, at what cost, "
            "stock and lead time, shipping where; filter by supplier or SKU.",
            api="merchant",
        ),
    )
    async def list_products(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        supplier_id: FromQuery[uuid.UUID | None] = None,
        sku: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[ProductOut]:
        page = await service.list_products(
            db_session, merchant.id, supplier_id=supplier_id, sku=sku, cursor=cursor, limit=limit
        )
        return page.map(product_out)

    @post(
        "/",
        status_code=201,
        summary="Add or update one offer (upsert on supplier + SKU)",
        **operation(
            "upsertSupplierProduct",
            "Add a supplier's offer for one of your SKUs, or update it if that supplier "
            "already offers the SKU.",
            api="merchant",
            method="POST",
            not_found="`supplier_id` is not one of your suppliers.",
        ),
    )
    async def upsert(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[ProductIn],
    ) -> ProductOut:
        row = {
            "sku": data.sku,
            "supplier_sku": data.supplier_sku,
            "unit_cost": str(data.unit_cost),
            "currency": data.currency,
            "stock": data.stock,
            "lead_time_days": data.lead_time_days,
            "ships_to": data.ships_to,
            "priority": data.priority,
        }
        product = await service.put_product(db_session, merchant.id, data.supplier_id, row)
        if product is None:
            raise NotFoundException(f"supplier {data.supplier_id} not found")
        return product_out(product)

    @delete(
        "/{product_id:uuid}",
        status_code=204,
        summary="Remove an offer",
        **operation(
            "deleteSupplierProduct",
            "Remove a supplier's offer from your catalog: routing no longer considers it.",
            api="merchant",
            method="DELETE",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No offer with this id in your catalog.",
        ),
    )
    async def remove(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        product_id: FromPath[uuid.UUID],
    ) -> None:
        if not await service.delete_product(db_session, merchant.id, product_id):
            raise NotFoundException(f"supplier product {product_id} not found")

    @post(
        "/import",
        status_code=200,
        summary="Catalog CSV import (upserts on supplier + SKU); per-row report",
        **operation(
            "importSupplierProducts",
            "Import offers from a CSV file, one row per (supplier, SKU): new ones are created, "
            "existing ones updated. Answers counts and a report for every row (created, "
            "updated or rejected with the reason); a file that cannot be read is a 400.",
            api="merchant",
            method="POST",
            body=csv_body(CATALOG_HEADER, CATALOG_HEADER, "Offers as"),
        ),
    )
    async def import_csv(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
    ) -> CatalogReport:
        # Authentication opened the request's transaction (on SQLite: the database's write
        # lock); end it before the upload is read, which may take a while.
        await db_session.commit()
        text = await csv_text(request)
        rows = await service.import_catalog(db_session, merchant.id, text)
        return CatalogReport(
            created=sum(r.status == "created" for r in rows),
            updated=sum(r.status == "updated" for r in rows),
            rejected=sum(r.status == "rejected" for r in rows),
            rows=[CatalogRow(r.row, r.status, r.sku, r.supplier, r.reason) for r in rows],
        )
