"""The worker's idle polling bound is a range: Redis is neither hammered nor left unread."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


@pytest.mark.parametrize("ms", [10, 1000, 10_000])
def test_idle_poll_inside_its_range_is_taken(ms: int) -> None:
    assert Settings(worker_idle_poll_ms=ms).worker_idle_poll_ms == ms


@pytest.mark.parametrize("ms", [9, 0, -1, 10_001])
def test_idle_poll_outside_its_range_is_refused_by_name(ms: int) -> None:
    with pytest.raises(ValidationError, match="worker_idle_poll_ms"):
        Settings(worker_idle_poll_ms=ms)


def test_idle_poll_defaults_to_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROPSHIP_WORKER_IDLE_POLL_MS", raising=False)
    assert Settings().worker_idle_poll_ms == 1000
