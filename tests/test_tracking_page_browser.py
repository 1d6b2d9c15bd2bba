"""The tracking page in a real browser: Debian's headless Chromium (``/usr/bin/chromium``)
driven by Playwright, against the real server on a free port, at a phone's viewport and a
desktop's. It checks what the customer sees and saves screenshots where CI keeps them
(``DROPSHIP_TEST_ARTIFACTS``, default ``var/ci-artifacts/``).

Without Chromium the test is skipped, unless ``DROPSHIP_TEST_REQUIRE_BROWSER=1`` (``.ci/run``
sets it): then it fails. Playwright never downloads a browser here (no ``playwright install``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient
from playwright.async_api import Page, async_playwright

from app.db import Database
from app.main import create_app
from app.settings import Settings
from tests.support.services import free_port
from tests.support.tracking_page import (
    TRACKING_NUMBER,
    TRACKING_URL,
    Tracked,
    branded_shop,
    tracked_order,
)

Client = AsyncTestClient[Litestar]
TIMES = "\N{MULTIPLICATION SIGN}"

CHROMIUM = os.environ.get("DROPSHIP_TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("DROPSHIP_TEST_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(
    os.environ.get(
        "DROPSHIP_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "var" / "ci-artifacts"
    )
)
#: Headless on a closed network: no GPU, sandbox (CI runs as root), or background traffic.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    },
    "desktop": {"viewport": {"width": 1280, "height": 900}},
}


@pytest.fixture
def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason}; DROPSHIP_TEST_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return path


@pytest.fixture
def sqlite_only(backend: str) -> None:
    # The page reads the same two queries on both backends (tests/test_tracking_page.py).
    if backend != "sqlite":
        pytest.skip("the browser test runs on the SQLite backend only")


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[str]:
    """The real HTTP server (uvicorn, the API alone: the test client's app runs the workers)
    on a free port of this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, configure_logs=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def text(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.mark.usefixtures("sqlite_only")
async def test_a_customer_sees_their_order_on_a_phone_and_a_desktop(
    chromium: str, client: Client, db: Database, server: str, artifacts: Path
) -> None:
    tracked = await tracked_order(client, db, await branded_shop(db))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            for name, options in VIEWPORTS.items():
                context = await browser.new_context(locale="en-US", **options)
                try:
                    await visit(await context.new_page(), server, tracked, artifacts / name)
                finally:
                    await context.close()
        finally:
            await browser.close()


async def visit(page: Page, server: str, tracked: Tracked, shot: Path) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server) else foreign.append(r.url))
    response = await page.goto(f"{server}/track/{tracked.token}")
    assert response is not None
    assert response.status == 200
    # Taken first, so a failing check below still leaves the picture behind.
    png = await page.screenshot(path=f"{shot.parent}/tracking-page-{shot.name}.png", full_page=True)
    assert len(png) > 5_000
    await check_page(page, tracked)
    # The stylesheet ran under the CSP (its nonce), the brand colour with it.
    background = await page.locator("header.brand").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert background == "rgb(15, 118, 110)"
    # Nothing wider than the screen (no sideways scrolling on a phone).
    viewport = page.viewport_size
    assert viewport is not None
    assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    assert problems == []  # no CSP violation, no script error
    assert foreign == []  # nothing loaded from anywhere else


async def check_page(page: Page, tracked: Tracked) -> None:
    heading = page.get_by_role("heading", level=1)
    assert await heading.is_visible()
    assert (await heading.inner_text()).strip() == f"Order {tracked.order_name}"
    assert await text(page, "header.brand") == "Glow & Co"
    assert await text(page, ".summary .status") == "Shipped"
    shipment = page.locator("#shipment-1")
    assert (await shipment.get_by_role("heading", level=2).inner_text()).split() == [
        "Shipment",
        "1",
        "In",
        "transit",
    ]
    assert await text(page, "#shipment-1 .carrier") == "UPS"
    assert await text(page, "#shipment-1 .tracking-number") == TRACKING_NUMBER
    assert await text(page, "#shipment-1 .badge") == "In transit"
    assert await text(page, "#shipment-1 .estimated") == "December 2, 2026"
    events = await page.locator("#shipment-1 ol.events li strong").all_inner_texts()
    assert events == ["In transit", "Label created"]
    link = page.get_by_role("link", name="Track at UPS")
    assert await link.is_visible()
    assert await link.get_attribute("href") == TRACKING_URL
    assert await link.get_attribute("rel") == "noopener noreferrer"
    items: list[Any] = await page.locator(".unshipped li").all_inner_texts()
    assert [" ".join(i.split()) for i in items] == [
        f"1 {TIMES} Red mug Large",
        f"1 {TIMES} Blue bowl",
    ]
