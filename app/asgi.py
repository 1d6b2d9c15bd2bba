"""ASGI entry point: ``uvicorn --factory app.asgi:create`` (what ``dropship serve`` runs)."""

from litestar import Litestar

from app.main import create_app


def create() -> Litestar:
    return create_app()
