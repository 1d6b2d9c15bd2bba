"""The ``dropship`` command: what a newcomer and an operator see."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from app.db import Database
from app.merchants.models import ApiToken, Merchant
from app.security import hash_token
from app.settings import Settings
from connectors.registry import CONNECTORS
from dropship.cli import main
from tests.support import services as svc


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


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"dropship {importlib.metadata.version('dropship')}\n"


#: Every command that opens the database, with the arguments it needs to get that far.
DATABASE_COMMANDS = [
    ["migrate"],
    ["serve", "--port", "1"],
    ["worker"],
    ["merchant", "create", "--shop", "s.myshopify.com", "--email", "o@x.io"],
    ["supplier", "create", "--merchant", "s.myshopify.com", "--name", "X", "--connector", "portal"],
]


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    env = {**_env(tmp_path), "DROPSHIP_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = CliRunner().invoke(main, args, env={**env, "DROPSHIP_ENV": "bogus"})
    assert _one_line_error(result) == (
        "Error: bad setting: DROPSHIP_ENV: Input should be 'development', 'production' or 'test'"
        " (got 'bogus')"
    )
    result = CliRunner().invoke(main, args, env={**env, "DROPSHIP_SMTP_URL": "http://x"})
    assert _one_line_error(result) == (
        "Error: bad setting: DROPSHIP_SMTP_URL: expected smtp://user:pass@host:port"
        " (or smtps:// for TLS) (got 'http://x')"
    )


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_database_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    port = svc.free_port()  # nothing listens there
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    env = {**_env(tmp_path), "DROPSHIP_REDIS_URL": "redis://127.0.0.1:1/0"}
    for url, expected in (
        (
            f"postgresql+asyncpg://dropship:hunter2@127.0.0.1:{port}/dropship",
            f"Error: cannot use the database postgresql+asyncpg://dropship:***@127.0.0.1:{port}"
            f"/dropship: [Errno 111] Connect call failed ('127.0.0.1', {port})",
        ),
        (
            f"sqlite+aiosqlite:///{not_a_dir}/sub/x.db",
            f"Error: cannot use the database sqlite+aiosqlite:///{not_a_dir}/sub/x.db:"
            f" [Errno 20] Not a directory: '{not_a_dir}/sub'",
        ),
        (
            "not a url",
            "Error: cannot use the database (an unparseable URL):"
            " Could not parse SQLAlchemy URL from given URL string",
        ),
    ):
        result = CliRunner().invoke(main, args, env={**env, "DROPSHIP_DATABASE_URL": url})
        assert _one_line_error(result) == expected
        assert "hunter2" not in result.output


def test_supplier_create_help_lists_the_connector_kinds() -> None:
    result = CliRunner().invoke(main, ["supplier", "create", "--help"])
    assert result.exit_code == 0
    assert f"connector kind: {', '.join(sorted(CONNECTORS))}" in " ".join(result.output.split())
    assert sorted(CONNECTORS) == ["portal", "rest_json"]


def test_worker_hides_the_broker_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.runtime

    ran: list[Settings] = []

    async def run_worker(settings: Settings) -> None:  # the broker itself is not the point here
        ran.append(settings)

    monkeypatch.setattr(workers.runtime, "run_worker", run_worker)
    env = _env(tmp_path)
    CliRunner().invoke(main, ["migrate"], env=env)
    result = CliRunner().invoke(
        main, ["worker"], env={**env, "DROPSHIP_REDIS_URL": "redis://:s3cret@127.0.0.1:1/0"}
    )
    assert result.exit_code == 0, result.output
    assert "broker redis://:***@127.0.0.1:1/0" in result.output
    assert "s3cret" not in result.output
    assert ran[0].redis_url == "redis://:s3cret@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "args",
    [a for a in DATABASE_COMMANDS if a[0] in ("serve", "worker", "supplier")],
    ids=lambda a: a[0],
)
def test_production_without_a_secret_key_is_one_line(tmp_path: Path, args: list[str]) -> None:
    env = {
        **_env(tmp_path),
        "DROPSHIP_REDIS_URL": "redis://127.0.0.1:1/0",
        "DROPSHIP_ENV": "production",
        "DROPSHIP_SECRET_KEY": "",
    }
    result = CliRunner().invoke(main, args, env=env)
    assert _one_line_error(result) == "Error: DROPSHIP_SECRET_KEY must be set in production"
