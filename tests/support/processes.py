"""Running ``dropship`` itself as a separate process, to kill it for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.settings import Settings
from tests.conftest import SHOPIFY_SECRET


def dropship_env(settings: Settings, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``dropship`` process sharing the test's database and Redis."""
    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": settings.database_url,
        "DROPSHIP_SECRET_KEY": settings.secret_key or "test-secret-key",
        "DROPSHIP_SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "DROPSHIP_VAR_DIR": str(var_dir),
        "DROPSHIP_LOG_LEVEL": "WARNING",
        "DROPSHIP_RELAY_INTERVAL": "0.05",
        "DROPSHIP_WORKER_IDLE_POLL_MS": "100",
        **extra,
    }
    env.pop("DROPSHIP_REDIS_URL", None)
    if settings.redis_url:
        env["DROPSHIP_REDIS_URL"] = settings.redis_url
    return env


def start_dropship(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dropship.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
