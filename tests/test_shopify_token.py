"""The store's Admin API access token given by hand (a custom app's), by the CLI or the merchant
API: stored encrypted under the secret key, never shown again, bad input refused naming it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.db import Database
from app.merchants.models import Merchant
from app.merchants.service import shopify_token
from app.security import SecretBox
from app.settings import Settings
from dropship.cli import main
from tests.conftest import MerchantHandle

Client = AsyncTestClient[Litestar]
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
PATH = "/api/v1/settings/shopify-token"

NOT_TOKENS = [
    "",
    "   ",
    "shpat_short",
    "shpat_0123456789abcdef 0123456789abcdef",  # whitespace inside
    "https://demo.myshopify.com/admin",
    "shpat_" + "a" * 300,  # over the bound
    "shpat_0123456789abcdef0123456789abcde\u0000",
]


async def stored(db: Database, merchant_id: Any) -> Merchant:
    async with db.sessionmaker() as s:
        m = await s.scalar(select(Merchant).where(Merchant.id == merchant_id))
        assert m is not None
        return m


def box_of(settings: Settings) -> SecretBox:
    return SecretBox(settings.resolved_secret_key())


class TestMerchantApi:
    async def test_the_token_is_stored_encrypted_and_never_shown(
        self, client: Client, db: Database, settings: Settings, merchant: MerchantHandle
    ) -> None:
        r = await client.put(PATH, json={"access_token": f"  {TOKEN}\n"}, headers=merchant.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"shop": merchant.shop, "access_token_set": True}
        assert TOKEN not in r.text
        m = await stored(db, merchant.id)
        assert m.shopify_token_encrypted is not None
        assert TOKEN.encode() not in m.shopify_token_encrypted
        assert shopify_token(box_of(settings), m) == TOKEN  # trimmed, as Shopify issued it

    async def test_forgetting_it(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        await client.put(PATH, json={"access_token": TOKEN}, headers=merchant.headers)
        r = await client.delete(PATH, headers=merchant.headers)
        assert r.status_code == 204, r.text
        assert (await stored(db, merchant.id)).shopify_token_encrypted is None

    @pytest.mark.parametrize("bad", NOT_TOKENS)
    async def test_what_is_not_a_token_is_400_and_changes_nothing(
        self,
        client: Client,
        db: Database,
        settings: Settings,
        merchant: MerchantHandle,
        bad: str,
    ) -> None:
        await client.put(PATH, json={"access_token": TOKEN}, headers=merchant.headers)
        r = await client.put(PATH, json={"access_token": bad}, headers=merchant.headers)
        assert r.status_code == 400, r.text
        assert r.json()["extra"]["field"] == "access_token"
        assert r.json()["detail"].startswith("access_token")
        assert shopify_token(box_of(settings), await stored(db, merchant.id)) == TOKEN

    async def test_without_a_merchant_token_nothing_is_set(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        r = await client.put(PATH, json={"access_token": TOKEN})
        assert r.status_code == 401
        assert (await stored(db, merchant.id)).shopify_token_encrypted is None


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DROPSHIP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "DROPSHIP_VAR_DIR": str(tmp_path / "var"),
        "DROPSHIP_REDIS_URL": "",
        "DROPSHIP_SECRET_KEY": "cli-secret",
    }


def _merchants(env: dict[str, str]) -> list[Merchant]:
    async def load() -> list[Merchant]:
        db = Database(env["DROPSHIP_DATABASE_URL"])
        try:
            async with db.sessionmaker() as s:
                return list((await s.scalars(select(Merchant))).all())
        finally:
            await db.dispose()

    return asyncio.run(load())


class TestCli:
    CREATE = ["merchant", "create", "--shop", "tok.myshopify.com", "--email", "o@x.io"]

    @pytest.mark.parametrize("from_stdin", [False, True])
    def test_merchant_create_stores_the_token_encrypted(
        self, tmp_path: Path, from_stdin: bool
    ) -> None:
        runner = CliRunner()
        env = _env(tmp_path)
        assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
        args = [*self.CREATE, "--access-token", "-" if from_stdin else TOKEN]
        created = runner.invoke(main, args, env=env, input=f"{TOKEN}\n" if from_stdin else None)
        assert created.exit_code == 0, created.output
        assert "Shopify Admin API token stored (encrypted)" in created.output
        assert TOKEN not in created.output
        [m] = _merchants(env)
        assert shopify_token(SecretBox("cli-secret"), m) == TOKEN
        assert TOKEN not in (tmp_path / "cli.db").read_bytes().decode("latin-1")

    def test_a_bad_token_is_one_line_and_creates_nothing(self, tmp_path: Path) -> None:
        runner = CliRunner()
        env = _env(tmp_path)
        runner.invoke(main, ["migrate"], env=env)
        bad = runner.invoke(main, [*self.CREATE, "--access-token", "not a token"], env=env)
        assert bad.exit_code == 1
        assert bad.output.startswith("Error: access_token: expected the store's Admin API")
        assert bad.output.count("\n") == 1
        assert _merchants(env) == []


@pytest.mark.parametrize(
    ("token", "accepted"),
    [
        ("a" * 32, True),  # a pre-2020 token: 32 characters, no prefix
        ("a" * 31, False),
        ("shpat_" + "a" * 200, True),  # the longest accepted
        ("shpat_" + "a" * 201, False),
        ("shpca_" + "0" * 32, True),
        ("shpat_" + "0" * 31, False),
    ],
)
def test_the_token_bounds_at_their_edges(token: str, accepted: bool) -> None:
    from app.errors import InvalidInput
    from app.merchants.service import check_access_token

    if accepted:
        assert check_access_token(token) == token
    else:
        with pytest.raises(InvalidInput) as caught:
            check_access_token(token)
        assert caught.value.field == "access_token"
