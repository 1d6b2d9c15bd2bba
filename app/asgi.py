"""ASGI entry point: ``uvicorn --factory app.asgi:create`` (what ``dropship serve`` runs)."""

import sys

from litestar.types import ASGIApp

from app.main import create_app
from app.webhooks.controllers import shopify_fast_path

#: Seconds a thread may hold the GIL before another is let in (CPython's default: 0.005).
#: Big imports and simulations run on threads so the event loop stays free, but every database
#: answer the loop waits for crosses threads: with the default, a request queued behind those
#: threads' 5 ms slices many times over took more than a second. A shorter slice keeps every
#: other tenant's request fast, at a small cost in switching for the heavy one.
GIL_SWITCH_INTERVAL = 0.001


def create() -> ASGIApp:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    app = create_app()
    return shopify_fast_path(app, app.state.services)
