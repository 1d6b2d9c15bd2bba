"""The one retry backoff: exponential, with equal jitter.

The step doubles with each attempt up to a cap, and the delay is drawn uniformly between half the
step and the whole step ("equal jitter"). Half the step is a floor, so a retry never comes back
at once to a supplier or server that just failed; the random other half spreads the retries of
many workers that failed together. Full jitter (0 … step) would spread them a little more but
allows near-immediate retries, which is what a struggling supplier must not get.
"""

from __future__ import annotations

import random
from datetime import timedelta

#: A scheduled retry may arrive this much before its ``next_attempt_at`` (clock steps, broker
#: timing) and still count as due.
EARLY = timedelta(seconds=2)
#: Doubling past this adds nothing (every cap is reached long before) and keeps floats finite.
_MAX_DOUBLINGS = 32


def backoff_ms(
    attempt: int, *, base_ms: float, cap_ms: float, floor_ms: float | None = None
) -> int:
    """Milliseconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    The step is ``base_ms * 2 ** (attempt - 1)``, at most ``cap_ms``; the delay is uniform in
    ``[step / 2, step]``. ``floor_ms`` (a server's ``Retry-After``) is waited at least, even past
    ``cap_ms``: the server said when; the caller bounds what it accepts.
    """
    step = min(cap_ms, base_ms * 2 ** min(max(0, attempt - 1), _MAX_DOUBLINGS))
    delay = random.uniform(step / 2, step)
    if floor_ms is not None:
        delay = max(delay, floor_ms)
    return int(delay)
