"""How well a drain keeps the order of arrival, and the rate in the middle of a batch: pure
helpers of bench/route.py's backlog mode (tested in tests/test_bench_ordering.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of their ranks (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on the ranks): 1.0 = the same order."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 2:
        return 1.0
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else 1.0


def order_kept(
    arrived: Sequence[float], done: Sequence[float], *, far: float = 0.1
) -> dict[str, Any]:
    """How an item's place in the done order compares with its place in the arrival order.

    ``spearman``: rank correlation; ``moved_far``: the share of items done more than ``far``
    x n positions from their arrival position; ``same_decile``: the share done in the decile
    of arrival; ``decile_done_median``: for each arrival decile, the median done time (a
    drain that keeps the order makes it rise)."""
    n = len(arrived)
    if n != len(done):
        raise ValueError("arrived and done differ in length")
    if n == 0:
        return {"n": 0}
    ra, rd = ranks(arrived), ranks(done)
    moved = [abs(a - d) for a, d in zip(ra, rd, strict=True)]

    def decile(r: float) -> int:
        return min(9, int((r - 1) * 10 // n))

    by_decile: list[list[float]] = [[] for _ in range(10)]
    for r, t in zip(ra, done, strict=True):
        by_decile[decile(r)].append(t)
    return {
        "n": n,
        "spearman": spearman(arrived, done),
        "moved_far": sum(1 for m in moved if m > far * n) / n,
        "moved_mean": sum(moved) / n,
        "same_decile": sum(1 for a, d in zip(ra, rd, strict=True) if decile(a) == decile(d)) / n,
        "decile_done_median": [median(d) if d else None for d in by_decile],
    }


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def middle_rate(times: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Events per second between the ``lo`` and ``hi`` quantiles of their times (a drain's
    rate without the start-up and the last stragglers)."""
    t = sorted(times)
    if len(t) < 2:
        return 0.0
    a, b = int(lo * (len(t) - 1)), int(hi * (len(t) - 1))
    if b <= a or t[b] <= t[a]:
        a, b = 0, len(t) - 1
    return (b - a) / (t[b] - t[a]) if t[b] > t[a] else 0.0
