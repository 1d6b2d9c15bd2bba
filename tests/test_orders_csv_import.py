"""``POST /api/v1/orders/import``: CSV (text/csv body or multipart ``file``) to orders, with a
verdict for every row; whole orders or nothing; re-imports are harmless; bad files are 400."""

from __future__ import annotations

from typing import Any

import pytest

from app.db import Database
from app.orders.models import Order, OrderLine
from tests.conftest import MerchantHandle
from tests.support.orders import Client, count, get_order, wait_for_status

IMPORT = "/api/v1/orders/import"
HEADER = "reference,currency,name,address1,city,province_code,zip,country_code,sku,quantity,price"
ADDR = "Ada Lovelace,12 Congress Ave,Austin,TX,78701,US"

#: Two good orders (CSV-1 has 2 lines), CSV-3 with a bad quantity on one of its two rows, and a
#: row with no reference.
MIXED = "\n".join(
    [
        HEADER,
        f"CSV-1,USD,{ADDR},SKU-RED,2,10.50",  # row 2
        f"CSV-1,USD,{ADDR},SKU-BLUE,1,4.99",  # row 3
        f"CSV-2,USD,{ADDR},SKU-RED,1,10.50",  # row 4
        f"CSV-3,USD,{ADDR},SKU-RED,0,10.50",  # row 5: bad quantity
        f"CSV-3,USD,{ADDR},SKU-BLUE,1,4.99",  # row 6: its sibling
        f",USD,{ADDR},SKU-RED,1,10.50",  # row 7: no reference
    ]
)


def csv_headers(merchant: MerchantHandle, content_type: str = "text/csv") -> dict[str, str]:
    return {**merchant.headers, "Content-Type": content_type}


async def import_csv(
    client: Client, merchant: MerchantHandle, text: str | bytes, status: int = 200
) -> Any:
    content = text.encode() if isinstance(text, str) else text
    r = await client.post(IMPORT, content=content, headers=csv_headers(merchant))
    assert r.status_code == status, r.text
    return r.json()


def csv_of(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def verdicts(report: dict[str, Any]) -> list[tuple[int, str, str | None, str | None]]:
    return [(r["row"], r["status"], r["reference"], r["reason"]) for r in report["rows"]]


class TestImportReport:
    async def test_mixed_file_gives_a_verdict_for_every_row(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        report = await import_csv(client, merchant, MIXED)
        assert (report["created"], report["duplicate"], report["rejected"]) == (2, 0, 2)
        assert verdicts(report) == [
            (2, "created", "CSV-1", None),
            (3, "created", "CSV-1", None),
            (4, "created", "CSV-2", None),
            (5, "rejected", "CSV-3", "quantity: must be a whole number from 1 to 100000, got '0'"),
            (6, "rejected", "CSV-3", "another row of this order was rejected (row 5)"),
            (7, "rejected", None, "reference: required"),
        ]
        rows = report["rows"]
        assert rows[0]["order_id"] == rows[1]["order_id"] is not None
        assert rows[2]["order_id"] not in (None, rows[0]["order_id"])
        assert all(r["order_id"] is None for r in rows[3:])
        assert await count(db, Order) == 2
        assert await count(db, OrderLine) == 3

        order = await get_order(client, merchant, rows[0]["order_id"])
        assert order["source"] == "csv"
        assert order["reference"] == "CSV-1"
        assert order["subtotal_price"] == "25.99"
        assert order["total_price"] == "25.99"
        assert order["financial_status"] == "paid"
        assert [(ln["sku"], ln["quantity"], ln["price"]) for ln in order["lines"]] == [
            ("SKU-RED", 2, "10.50"),
            ("SKU-BLUE", 1, "4.99"),
        ]
        assert order["shipping_address"]["name"] == "Ada Lovelace"
        assert order["shipping_address"]["province_code"] == "TX"
        assert order["timeline"][0]["message"] == "order CSV-1 received from csv"

    async def test_reimport_reports_duplicates_and_creates_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        first = await import_csv(client, merchant, MIXED)
        again = await import_csv(client, merchant, MIXED)
        assert (again["created"], again["duplicate"], again["rejected"]) == (0, 2, 2)
        assert [(r["row"], r["status"]) for r in again["rows"]] == [
            (2, "duplicate"),
            (3, "duplicate"),
            (4, "duplicate"),
            (5, "rejected"),
            (6, "rejected"),
            (7, "rejected"),
        ]
        assert [r["order_id"] for r in again["rows"][:3]] == [
            r["order_id"] for r in first["rows"][:3]
        ]
        assert await count(db, Order) == 2
        assert await count(db, OrderLine) == 3

    async def test_references_already_entered_by_hand_are_duplicates(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        from tests.support.orders import create_order

        manual = await create_order(client, merchant, "CSV-2")
        report = await import_csv(client, merchant, MIXED)
        assert [(r["row"], r["status"], r["order_id"]) for r in report["rows"]][2] == (
            4,
            "duplicate",
            manual["id"],
        )

    async def test_another_merchant_importing_the_same_file_gets_its_own_orders(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        db: Database,
    ) -> None:
        await import_csv(client, merchant, MIXED)
        theirs = await import_csv(client, other_merchant, MIXED)
        assert (theirs["created"], theirs["duplicate"]) == (2, 0)
        assert await count(db, Order, merchant_id=other_merchant.id) == 2

    async def test_imported_orders_are_validated(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        report = await import_csv(client, merchant, csv_of(f"V-1,USD,{ADDR},NO-SUCH-SKU,1,5"))
        order_id = report["rows"][0]["order_id"]
        detail = await wait_for_status(client, merchant, order_id, "needs_attention")
        assert detail["status_reason"] == "SKU NO-SUCH-SKU is not in any active supplier's catalog"

    async def test_optional_columns_any_order_case_bom_and_crlf(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        header = (
            "SKU,Quantity,Price,Title,Reference,Currency,Name,Address1,City,Province_Code,Zip,"
            "Country_Code,Email,Shipping_Price,Tax,Shipping_Method,Note,Financial_Status"
        )
        row = (
            "SKU-RED,3,1.25,Red mug,O-1,usd,Ada,1 Main,Austin,TX,78701,us,"
            "ada@example.com,4.00,0.50,Ground,fragile,pending"
        )
        text = "\ufeff" + header + "\r\n" + row + "\r\n"
        report = await import_csv(client, merchant, text)
        assert verdicts(report) == [(2, "created", "O-1", None)]
        order = await get_order(client, merchant, report["rows"][0]["order_id"])
        assert order["currency"] == "USD"
        assert order["shipping_address"]["country_code"] == "US"
        assert order["email"] == "ada@example.com"
        assert order["subtotal_price"] == "3.75"
        assert order["total_price"] == "8.25"
        assert order["shipping_method"] == "Ground"
        assert order["note"] == "fragile"
        assert order["financial_status"] == "pending"
        assert order["lines"][0]["title"] == "Red mug"

    async def test_order_columns_may_be_given_once(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        report = await import_csv(
            client,
            merchant,
            csv_of(f"ONCE,USD,{ADDR},SKU-RED,1,1.00", "ONCE,,,,,,,,SKU-BLUE,2,2.00"),
        )
        assert [r["status"] for r in report["rows"]] == ["created", "created"]
        order = await get_order(client, merchant, report["rows"][0]["order_id"])
        assert order["total_price"] == "5.00"

    async def test_rows_of_an_order_need_not_be_adjacent(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        report = await import_csv(
            client,
            merchant,
            csv_of(
                f"A,USD,{ADDR},SKU-RED,1,1",
                f"B,USD,{ADDR},SKU-RED,1,1",
                f"A,USD,{ADDR},SKU-BLUE,1,1",
            ),
        )
        ids = [r["order_id"] for r in report["rows"]]
        assert ids[0] == ids[2] != ids[1]
        assert report["created"] == 2

    async def test_row_numbers_count_blank_rows_like_a_spreadsheet(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        text = f"{HEADER}\n\nB-1,USD,{ADDR},SKU-RED,1,1\n,,,,,,,,,,\nB-2,USD,{ADDR},SKU-RED,x,1\n"
        report = await import_csv(client, merchant, text)
        assert [(r["row"], r["status"]) for r in report["rows"]] == [
            (3, "created"),
            (5, "rejected"),
        ]

    async def test_header_only_gives_an_empty_report(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        report = await import_csv(client, merchant, HEADER + "\n")
        assert report == {"created": 0, "duplicate": 0, "rejected": 0, "rows": []}


BAD_ROWS: list[tuple[str, str, str]] = [
    ("quantity word", f"Q,USD,{ADDR},SKU-RED,two,1", "quantity: "),
    ("quantity fraction", f"Q,USD,{ADDR},SKU-RED,1.5,1", "quantity: "),
    ("quantity negative", f"Q,USD,{ADDR},SKU-RED,-1,1", "quantity: "),
    ("quantity superscript", f"Q,USD,{ADDR},SKU-RED,\u00b2,1", "quantity: "),
    ("quantity huge", f"Q,USD,{ADDR},SKU-RED,100001,1", "quantity: "),
    ("price negative", f"Q,USD,{ADDR},SKU-RED,1,-1", "price: "),
    ("price word", f"Q,USD,{ADDR},SKU-RED,1,free", "price: "),
    ("price missing", f"Q,USD,{ADDR},SKU-RED,1,", "price: "),
    ("price too precise", f"Q,USD,{ADDR},SKU-RED,1,0.00001", "price: "),
    ("price too large", f"Q,USD,{ADDR},SKU-RED,1,1e20", "price: "),
    ("sku missing", f"Q,USD,{ADDR},,1,1", "sku: "),
    ("currency bad", f"Q,US$,{ADDR},SKU-RED,1,1", "currency: "),
    ("currency missing", f"Q,,{ADDR},SKU-RED,1,1", "currency: "),
    ("country alpha-3", "Q,USD,Ada,1 Main,Austin,TX,78701,USA,SKU-RED,1,1", "country_code: "),
    ("name missing", "Q,USD,,1 Main,Austin,TX,78701,US,SKU-RED,1,1", "name: "),
    ("too many values", f"Q,USD,{ADDR},SKU-RED,1,1,surprise", "row has 12 values"),
]


class TestRejectedRows:
    @pytest.mark.parametrize(
        ("row", "reason"), [(r, why) for _, r, why in BAD_ROWS], ids=[n for n, _, _ in BAD_ROWS]
    )
    async def test_bad_row_is_rejected_with_its_reason_and_nothing_stored(
        self, client: Client, merchant: MerchantHandle, db: Database, row: str, reason: str
    ) -> None:
        report = await import_csv(client, merchant, csv_of(row))
        [verdict] = report["rows"]
        assert verdict["row"] == 2
        assert verdict["status"] == "rejected"
        assert verdict["reason"].startswith(reason), verdict
        assert verdict["order_id"] is None
        assert report["rejected"] == 1
        assert await count(db, Order) == 0

    async def test_order_level_error_points_at_the_row_carrying_it(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        report = await import_csv(
            client,
            merchant,
            csv_of(
                "L,USD,,,,,,,SKU-RED,1,1",
                "L,,Ada,1 Main,Austin,TX,78701,USA,SKU-BLUE,1,1",
            ),
        )
        assert verdicts(report) == [
            (2, "rejected", "L", "another row of this order was rejected (row 3)"),
            (
                3,
                "rejected",
                "L",
                "country_code: 'USA' is not an ISO 3166-1 alpha-2 country code (like US, GB, DE)",
            ),
        ]
        assert await count(db, Order) == 0

    async def test_conflicting_order_columns_reject_the_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        report = await import_csv(
            client,
            merchant,
            csv_of(f"C,USD,{ADDR},SKU-RED,1,1", f"C,EUR,{ADDR},SKU-BLUE,1,1"),
        )
        assert verdicts(report) == [
            (2, "rejected", "C", "another row of this order was rejected (row 3)"),
            (3, "rejected", "C", "currency: 'EUR' differs from 'USD' on row 2 of the same order"),
        ]
        assert await count(db, Order) == 0


class TestBadFiles:
    async def test_multipart_file_works(self, client: Client, merchant: MerchantHandle) -> None:
        r = await client.post(
            IMPORT,
            files={"file": ("orders.csv", MIXED.encode(), "text/csv")},
            headers=merchant.headers,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["created"], r.json()["rejected"]) == (2, 2)

    async def test_multipart_without_file_field_is_400_naming_file(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await client.post(
            IMPORT,
            files={"upload": ("orders.csv", MIXED.encode(), "text/csv")},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["detail"] == "file: send the CSV as the multipart field 'file'"
        assert r.json()["extra"] == {"field": "file"}

    @pytest.mark.parametrize("column", ["reference", "quantity", "country_code"])
    async def test_missing_required_column_is_400_naming_it(
        self, client: Client, merchant: MerchantHandle, db: Database, column: str
    ) -> None:
        names = HEADER.split(",")
        keep = [i for i, n in enumerate(names) if n != column]
        lines = [",".join(names[i] for i in keep)]
        values = f"M-1,USD,{ADDR},SKU-RED,1,1".split(",")
        lines.append(",".join(values[i] for i in keep))
        r = await client.post(IMPORT, content="\n".join(lines), headers=csv_headers(merchant))
        assert r.status_code == 400
        body = r.json()
        assert body["detail"].startswith(f"{column}: missing column(s); expected header: ")
        assert body["extra"] == {"field": column}
        assert await count(db, Order) == 0

    @pytest.mark.parametrize(
        ("header", "detail"),
        [
            (HEADER + ",colour", "colour: unknown column(s)"),
            (HEADER + ",sku", "duplicate column(s): sku"),
        ],
    )
    async def test_unknown_or_repeated_column_is_400(
        self, client: Client, merchant: MerchantHandle, header: str, detail: str
    ) -> None:
        r = await client.post(IMPORT, content=header + "\n", headers=csv_headers(merchant))
        assert r.status_code == 400
        assert r.json()["detail"].startswith(detail)

    @pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
    async def test_wrong_content_type_is_400(
        self, client: Client, merchant: MerchantHandle, content_type: str
    ) -> None:
        r = await client.post(IMPORT, content=MIXED, headers=csv_headers(merchant, content_type))
        assert r.status_code == 400
        assert r.json()["detail"] == (
            "Content-Type: send the CSV as a text/csv body or as multipart field 'file', "
            f"not {content_type}"
        )

    async def test_charset_parameter_is_accepted(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await client.post(
            IMPORT, content=MIXED, headers=csv_headers(merchant, "text/csv; charset=utf-8")
        )
        assert r.status_code == 200

    async def test_non_utf8_is_400(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        text = csv_of("Z-1,EUR,Jürg,Bahnhofstr. 1,Zürich,,8001,CH,SKU-RED,1,1")
        r = await client.post(IMPORT, content=text.encode("latin-1"), headers=csv_headers(merchant))
        assert r.status_code == 400
        assert r.json()["detail"].startswith("file: not UTF-8 text")
        assert r.json()["extra"] == {"field": "file"}
        assert await count(db, Order) == 0

    async def test_utf8_names_are_kept(self, client: Client, merchant: MerchantHandle) -> None:
        report = await import_csv(
            client, merchant, csv_of("Z-1,EUR,Jürg,Bahnhofstr. 1,Zürich,,8001,CH,SKU-RED,1,1")
        )
        order = await get_order(client, merchant, report["rows"][0]["order_id"])
        assert order["shipping_address"]["city"] == "Zürich"

    @pytest.mark.parametrize(
        ("content", "detail"),
        [
            (b"", "empty file"),
            (b"\n\n", "empty file"),
            # PostgreSQL cannot store NUL: this used to be a 500 there.
            (HEADER.encode() + f"\nA\x00,USD,{ADDR},SKU-RED,1,1".encode(), "file: contains NUL"),
            # Over csv's own field limit: this was a csv.Error naming no column.
            (
                HEADER.encode() + b'\n"' + b"x" * 200_000 + b'"',
                "row 2, reference: longer than 10000 characters",
            ),
        ],
    )
    async def test_unreadable_files_are_400_never_500(
        self, client: Client, merchant: MerchantHandle, content: bytes, detail: str
    ) -> None:
        r = await client.post(IMPORT, content=content, headers=csv_headers(merchant))
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(detail)
