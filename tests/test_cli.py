"""The ``dropship`` command: what a newcomer and an operator see."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.db import Database
from app.merchants.models import ApiToken, Merchant
from app.security import hash_token


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DROPSHIP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "DROPSHIP_VAR_DIR": str(tmp_path / "var"),
        "DROPSHIP_REDIS_URL": "",
    }


def test_migrate_then_merchant_create_prints_a_working_token_once(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    migrated = runner.invoke(main, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "is at revision" in migrated.output

    created = runner.invoke(
        main,
        ["merchant", "create", "--shop", "Demo-Shop.myshopify.com", "--email", "o@x.io"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    assert "merchant demo-shop.myshopify.com created" in created.output
    token = created.output.split("store it now): ")[1].strip()
    assert token.startswith("dsm_")

    async def stored() -> tuple[str, str]:
        db = Database(env["DROPSHIP_DATABASE_URL"])
        try:
            async with db.sessionmaker() as s:
                m = await s.scalar(select(Merchant))
                t = await s.scalar(select(ApiToken))
                assert m is not None
                assert t is not None
                return m.shop_domain, t.token_hash
        finally:
            await db.dispose()

    domain, token_hash = asyncio.run(stored())
    assert domain == "demo-shop.myshopify.com"
    assert token_hash == hash_token(token)  # only the hash is stored
    assert token not in (tmp_path / "cli.db").read_bytes().decode("latin-1")

    again = runner.invoke(
        main,
        ["merchant", "create", "--shop", "demo-shop.myshopify.com", "--email", "o@x.io"],
        env=env,
    )
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_merchant_create_rejects_a_bad_shop_domain(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    runner.invoke(main, ["migrate"], env=env)
    bad = runner.invoke(
        main, ["merchant", "create", "--shop", "example.com", "--email", "o@x.io"], env=env
    )
    assert bad.exit_code != 0
    assert "myshopify.com" in bad.output


def test_serve_and_worker_refuse_an_unmigrated_database_naming_the_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    served = runner.invoke(main, ["serve", "--port", "1"], env=env)
    assert served.exit_code != 0
    assert "dropship migrate" in served.output

    worker = runner.invoke(
        main, ["worker"], env={**env, "DROPSHIP_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert worker.exit_code != 0
    assert "dropship migrate" in worker.output


def test_worker_without_redis_explains_the_embedded_mode(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["worker"], env=_env(tmp_path))
    assert result.exit_code != 0
    assert "DROPSHIP_REDIS_URL" in result.output


def test_supplier_create_prints_a_key_once_and_checks_its_input(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    runner.invoke(main, ["migrate"], env=env)
    runner.invoke(
        main, ["merchant", "create", "--shop", "s.myshopify.com", "--email", "o@x.io"], env=env
    )
    ok = runner.invoke(
        main,
        [
            "supplier",
            "create",
            "--merchant",
            "s.myshopify.com",
            "--name",
            "Acme Supply",
            "--connector",
            "rest_json",
            "--config",
            '{"base_url": "https://api.acme.example", "auth_value": "Bearer k"}',
        ],
        env=env,
    )
    assert ok.exit_code == 0, ok.output
    assert "supplier 'Acme Supply' (rest_json) created" in ok.output
    assert ok.output.split("supplier): ")[1].strip().startswith("dss_")
    secret_free = (tmp_path / "cli.db").read_bytes()
    assert b"Bearer k" not in secret_free  # connector settings are encrypted at rest

    for args, message in (
        (["--connector", "telepathy"], "unknown kind"),
        (["--connector", "rest_json", "--config", "{}"], "config.base_url"),
        (["--connector", "portal", "--config", "[1]"], "JSON object"),
    ):
        bad = runner.invoke(
            main,
            ["supplier", "create", "--merchant", "s.myshopify.com", "--name", "X", *args],
            env=env,
        )
        assert bad.exit_code != 0
        assert message in bad.output
    unknown = runner.invoke(
        main,
        [
            "supplier",
            "create",
            "--merchant",
            "nope.myshopify.com",
            "--name",
            "X",
            "--connector",
            "portal",
        ],
        env=env,
    )
    assert unknown.exit_code != 0
    assert "dropship merchant create" in unknown.output
