"""The ``dropship`` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from pydantic import ValidationError

from app.settings import Settings, redact_url
from connectors.registry import CONNECTORS


def _settings() -> Settings:
    """The settings, or a one-line error naming each bad variable (never a traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            field = Settings.model_fields.get(name)
            if field is not None and field.repr and "input" in error:  # never echo a secret
                message += f" (got {error['input']!r})"
            problems.append(f"DROPSHIP_{name.upper()}: {message}")
        raise click.ClickException("bad setting: " + "; ".join(problems)) from None


def _reason(exc: BaseException) -> str:
    """One line saying why, from the driver's own error when there is one."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, ModuleNotFoundError):
        return f"no driver for it is installed (module {exc.name})"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split())
    return text or type(cause).__name__


@contextmanager
def _database(settings: Settings) -> Iterator[None]:
    """A database that cannot be reached, opened or even parsed: one line, no traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, OSError, ImportError) as exc:
        raise click.ClickException(
            f"cannot use the database {_redact(settings)}: {_reason(exc)}"
        ) from None


def _secret_key(settings: Settings) -> str:
    try:
        return settings.resolved_secret_key()
    except (RuntimeError, OSError) as exc:  # production without a key; an unwritable var/
        raise click.ClickException(str(exc)) from None


def _require_schema(settings: Settings) -> None:
    from app.migrate import SchemaOutOfDate, check_schema

    try:
        with _database(settings):
            asyncio.run(check_schema(settings.database_url))
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dropship", prog_name="dropship", message="%(prog)s %(version)s")
def main() -> None:
    """dropship: Shopify orders in, supplier purchase orders out."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    "processes",
    default=1,
    show_default=True,
    type=int,
    help="HTTP server processes (needs DROPSHIP_REDIS_URL when more than 1).",
)
def serve(host: str, port: int, processes: int) -> None:
    """Run the HTTP API (and, without DROPSHIP_REDIS_URL, the workers in-process)."""
    import uvicorn

    settings = _settings()
    _secret_key(settings)
    _require_schema(settings)
    if processes > 1 and settings.embedded_broker:
        raise click.ClickException(
            "--workers > 1 needs DROPSHIP_REDIS_URL: the in-process broker lives in one process"
        )
    if processes > 1:
        _multiprocess_metrics(settings)
    mode = "in-process workers" if settings.embedded_broker else "workers via Redis"
    click.echo(f"dropship serving on http://{host}:{port} ({mode}; database {_redact(settings)})")
    uvicorn.run(
        "dropship.asgi:create",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )


def _multiprocess_metrics(settings: Settings) -> None:
    """Several server processes share one port, and a scrape reaches any one of them:
    prometheus_client's multiprocess mode adds up every process's counters (each writes its
    own file in this directory, emptied here, before the processes start)."""
    import os
    import shutil

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # the operator's own directory
    directory = settings.var_dir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


@main.command()
@click.option(
    "--queues",
    default=None,
    help="Comma-separated queues to consume (e.g. placement), default every queue "
    "(DROPSHIP_WORKER_QUEUES).",
)
def worker(queues: str | None) -> None:
    """Run Dramatiq workers, the outbox relay and the scheduler against DROPSHIP_REDIS_URL."""
    from app.jobs.task import all_queues
    from app.logging import configure_logging
    from workers.runtime import run_worker

    settings = _settings()
    if queues is not None:
        settings = settings.model_copy(update={"worker_queues": queues})
    unknown = (settings.consumed_queues() or set()) - set(all_queues())
    if unknown:
        raise click.ClickException(
            f"unknown queue(s) {', '.join(sorted(unknown))}; one of {', '.join(all_queues())}"
        )
    if settings.embedded_broker:
        raise click.ClickException(
            "DROPSHIP_REDIS_URL is not set: without Redis, `dropship serve` runs the workers itself"
        )
    _secret_key(settings)
    _require_schema(settings)
    configure_logging(settings)
    broker = redact_url(settings.redis_url or "")
    consumed = ",".join(sorted(settings.consumed_queues() or ())) or "all"
    click.echo(
        f"dropship worker: {settings.worker_threads} threads, queues {consumed}, broker {broker}"
    )
    asyncio.run(run_worker(settings))


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from app import migrate as m

    settings = _settings()
    with _database(settings):
        m.upgrade(settings.database_url)
        revision = m.head_revision(settings.database_url)
    click.echo(f"database {_redact(settings)} is at revision {revision}")


@main.command()
def demo() -> None:
    """One order from webhook to delivered on a throwaway in-process instance, with simulated
    storefront, supplier and Shopify Admin API: prints the timeline, the emails and the Shopify
    calls."""
    from dropship.demo import run

    try:
        run(click.echo)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def merchant() -> None:
    """Manage merchants."""


@merchant.command("create")
@click.option("--shop", required=True, help="the store's *.myshopify.com domain")
@click.option("--email", required=True, help="where the merchant gets alerts")
@click.option(
    "--access-token",
    default=None,
    help="the store's Admin API token (a custom app's), stored encrypted; "
    "'-' reads it from standard input (keeps it out of the shell history)",
)
def merchant_create(shop: str, email: str, access_token: str | None) -> None:
    """Create a merchant without the OAuth install; prints its API token once."""
    from app.db import Database
    from app.errors import DomainError
    from app.merchants.service import create_merchant
    from app.security import SecretBox

    settings = _settings()
    _require_schema(settings)
    if access_token == "-":  # noqa: S105 (the stdin marker, not a secret)
        access_token = sys.stdin.readline().strip()
    box = SecretBox(_secret_key(settings)) if access_token is not None else None

    async def run() -> tuple[str, str, str]:
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                m, token = await create_merchant(
                    session, shop, email, access_token=access_token, box=box
                )
                return str(m.id), m.shop_domain, token
        finally:
            await db.dispose()

    try:
        with _database(settings):
            merchant_id, domain, token = asyncio.run(run())
    except DomainError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"merchant {domain} created (id {merchant_id})")
    if access_token is not None:
        click.echo("Shopify Admin API token stored (encrypted)")
    click.echo(f"API token (shown once, store it now): {token}")


@main.group()
def supplier() -> None:
    """Manage suppliers."""


@supplier.command("create")
@click.option("--merchant", "shop", required=True, help="the merchant's *.myshopify.com domain")
@click.option("--name", required=True)
@click.option(
    "--connector", "kind", required=True, help=f"connector kind: {', '.join(sorted(CONNECTORS))}"
)
@click.option("--config", "config_json", default="{}", help="connector settings as JSON")
@click.option("--contact-email", default=None, help="where purchase-order notices go")
def supplier_create(
    shop: str, name: str, kind: str, config_json: str, contact_email: str | None
) -> None:
    """Create a supplier for a merchant; prints its supplier API key once."""
    import json

    from app.db import Database
    from app.errors import DomainError
    from app.mail.address import is_email
    from app.merchants.service import get_by_shop, normalize_shop_domain
    from app.security import SecretBox
    from app.suppliers.service import create_supplier

    settings = _settings()
    secret_key = _secret_key(settings)
    _require_schema(settings)
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--config is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise click.ClickException("--config must be a JSON object")
    if contact_email is not None and not is_email(contact_email):
        raise click.ClickException(f"--contact-email: {contact_email!r} is not one email address")

    async def run() -> tuple[str, str]:
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                merchant = await get_by_shop(session, normalize_shop_domain(shop))
                if merchant is None:
                    raise click.ClickException(
                        f"no merchant {shop}: `dropship merchant create` first"
                    )
                created, key = await create_supplier(
                    session,
                    SecretBox(secret_key),
                    merchant.id,
                    name=name,
                    connector=kind,
                    config=config,
                    contact_email=contact_email,
                )
                return str(created.id), key
        finally:
            await db.dispose()

    try:
        with _database(settings):
            supplier_id, key = asyncio.run(run())
    except DomainError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"supplier {name!r} ({kind}) created for {shop} (id {supplier_id})")
    click.echo(f"supplier API key (shown once, give it to the supplier): {key}")


def _redact(settings: Settings) -> str:
    return redact_url(settings.database_url)


if __name__ == "__main__":
    sys.exit(main())
