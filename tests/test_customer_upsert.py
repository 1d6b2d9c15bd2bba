"""A Shopify customer is taken in once per merchant and brought up to date by later orders; a
returning customer whose details did not change is read, not written, so two orders of the same
customer (a wholesale buyer, a POS register) do not queue one behind the other on its row."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import event, select, text, update

from app.db import Database, utcnow
from app.orders.drafts import CustomerDraft
from app.orders.models import Customer
from app.orders.service import upsert_customer
from tests.conftest import MerchantHandle

SHOPIFY_ID = 207119551


def draft(**changes: Any) -> CustomerDraft:
    values: dict[str, Any] = {
        "shopify_customer_id": SHOPIFY_ID,
        "email": "bob.norman@example.com",
        "first_name": "Bob",
        "last_name": "Norman",
        "phone": "+13125551212",
    }
    values.update(changes)
    return CustomerDraft(**values)


async def upsert(db: Database, merchant_id: Any, customer: CustomerDraft) -> uuid.UUID:
    async with db.transaction() as session:
        customer_id = await upsert_customer(session, merchant_id, customer, customer.email)
    assert customer_id is not None
    return customer_id


async def stored(db: Database) -> list[Customer]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Customer))).all())


async def test_a_new_customer_is_inserted_once_and_found_again(
    db: Database, merchant: MerchantHandle, other_merchant: MerchantHandle
) -> None:
    first = await upsert(db, merchant.id, draft())
    again = await upsert(db, merchant.id, draft())
    elsewhere = await upsert(db, other_merchant.id, draft())

    assert again == first
    assert elsewhere != first  # the same Shopify id at another shop is another customer
    rows = await stored(db)
    assert len(rows) == 2
    mine = next(c for c in rows if c.id == first)
    assert (mine.email, mine.first_name, mine.last_name, mine.phone) == (
        "bob.norman@example.com",
        "Bob",
        "Norman",
        "+13125551212",
    )


async def test_new_details_are_stored_and_missing_ones_keep_the_old(
    db: Database, merchant: MerchantHandle
) -> None:
    first = await upsert(db, merchant.id, draft())
    later = await upsert(db, merchant.id, draft(email="bob@example.net", phone=None))

    assert later == first
    [customer] = await stored(db)
    assert customer.email == "bob@example.net"
    assert customer.phone == "+13125551212"  # absent from the later order: kept


async def test_an_unchanged_customer_is_not_written(db: Database, merchant: MerchantHandle) -> None:
    await upsert(db, merchant.id, draft())
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().split(None, 1)[0].upper())

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await upsert(db, merchant.id, draft())
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    [customer] = await stored(db)
    if db.dialect == "postgresql":
        # One statement that inserts nothing and reads the row; no UPDATE follows.
        assert seen == ["WITH"]
    else:  # SQLite serialises writers anyway: its upsert stays one statement
        assert seen == ["INSERT"]
    assert customer.first_name == "Bob"


async def test_a_redacted_customer_keeps_its_blanks(db: Database, merchant: MerchantHandle) -> None:
    customer_id = await upsert(db, merchant.id, draft())
    async with db.transaction() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .values(email=None, first_name=None, last_name=None, phone=None, redacted_at=utcnow())
        )

    assert await upsert(db, merchant.id, draft(first_name="Robert")) == customer_id
    [customer] = await stored(db)
    assert (customer.email, customer.first_name, customer.last_name, customer.phone) == (
        None,
        None,
        None,
        None,
    )


async def test_two_orders_of_one_customer_do_not_wait_for_each_other(
    db: Database, merchant: MerchantHandle
) -> None:
    """The first order's transaction stays open (it is still routing); the second order's
    upsert of the same, unchanged customer must not wait for it. An ``ON CONFLICT DO UPDATE``
    locks the row until the first commits: the second would hit its lock timeout here."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite serialises every writer: there is no row lock to wait for")
    customer_id = await upsert(db, merchant.id, draft())
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first_order() -> uuid.UUID | None:
        async with db.transaction() as session:
            found = await upsert_customer(session, merchant.id, draft(), None)
            holding.set()
            await release.wait()
            return found

    first = asyncio.create_task(first_order())
    await holding.wait()
    try:
        async with db.transaction() as session:
            await session.execute(text("SET LOCAL lock_timeout = '1s'"))
            second = await upsert_customer(session, merchant.id, draft(), None)
    finally:
        release.set()
    assert second == customer_id
    assert await first == customer_id


async def test_a_changed_customer_waits_for_the_order_before_it(
    db: Database, merchant: MerchantHandle
) -> None:
    """New details are written under the row lock: two orders changing the same customer take
    turns, and the later one's details win."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite serialises every writer")
    await upsert(db, merchant.id, draft())
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first_order() -> None:
        async with db.transaction() as session:
            await upsert_customer(session, merchant.id, draft(first_name="Rob"), None)
            holding.set()
            await release.wait()

    first = asyncio.create_task(first_order())
    await holding.wait()
    second = asyncio.create_task(upsert(db, merchant.id, draft(first_name="Robert")))
    await asyncio.sleep(0.3)
    assert not second.done()  # waiting for the first order's lock
    release.set()
    await first
    await second
    [customer] = await stored(db)
    assert customer.first_name == "Robert"
