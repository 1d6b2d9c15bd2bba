"""ASGI entry point: ``uvicorn --factory app.asgi:create`` (what ``dropship serve`` runs)."""

from litestar.types import ASGIApp

from app.main import create_app
from app.webhooks.controllers import shopify_fast_path


def create() -> ASGIApp:
    app = create_app()
    return shopify_fast_path(app, app.state.services)
