"""The benchmarks' pure helpers count exactly: rank correlation and displacement of a drain's
order (bench/ordering.py), a batch's rate in its middle, and the floor's jobs/s and CPU per job
between 10 % and 90 % of a batch acknowledged (bench/floor.py)."""

from __future__ import annotations

import pytest

from bench.floor import Sample, window
from bench.ordering import middle_rate, order_kept, ranks, spearman


def test_ranks_share_ties() -> None:
    assert ranks([30.0, 10.0, 20.0, 10.0]) == [4.0, 1.5, 3.0, 1.5]


def test_spearman_same_reversed_and_one_swap() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # One adjacent swap in 4: 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_order_kept_counts_far_moves_and_deciles() -> None:
    arrived = [float(i) for i in range(20)]
    done = list(arrived)
    done[0], done[19] = 19.5, -1.0  # the first done last, the last done first
    kept = order_kept(arrived, done)
    assert kept["n"] == 20
    # The two swapped moved 19 positions (more than 0.1 x 20); the 18 others kept theirs (one
    # left the front as one came in).
    assert kept["moved_far"] == 2 / 20
    assert kept["moved_mean"] == (19 + 19) / 20
    assert kept["same_decile"] == 18 / 20
    assert kept["spearman"] == pytest.approx(1 - 6 * (19**2 + 19**2) / (20 * (20**2 - 1)))
    # Arrival decile 0 is items 0 and 1 (done at 19.5 and 1.0), decile 9 items 18 and 19.
    assert kept["decile_done_median"][0] == pytest.approx((19.5 + 1.0) / 2)
    assert kept["decile_done_median"][9] == pytest.approx((18.0 - 1.0) / 2)
    perfect = order_kept(arrived, arrived)
    assert (perfect["spearman"], perfect["moved_far"], perfect["same_decile"]) == (1.0, 0.0, 1.0)


def test_middle_rate_leaves_out_the_tails() -> None:
    # 11 events: a slow start (10 s), then one per second, then a straggler 100 s later.
    times = [0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 118.0]
    # Quantile indices int(0.1 * 10) = 1 and int(0.9 * 10) = 9: 8 events in 8 s.
    assert middle_rate(times) == 1.0
    assert middle_rate([5.0]) == 0.0


def test_floor_window_between_ten_and_ninety_percent() -> None:
    n = 100
    samples = [
        Sample(0.0, 100, 0.0),  # start-up: nothing acknowledged
        Sample(1.0, 95, 0.1),
        Sample(2.0, 88, 0.2),  # 12 done: first >= 10 %
        Sample(3.0, 50, 0.5),
        Sample(4.0, 8, 1.1),  # 92 done: first >= 90 %
        Sample(9.0, 0, 1.2),
    ]
    w = window(samples, n)
    assert w["jobs_in_window"] == 80
    assert w["window_s"] == 2.0
    assert w["jobs_per_s"] == 40.0
    assert w["cpu_us_per_job"] == pytest.approx(0.9 / 80 * 1e6)
    assert w["cores"] == pytest.approx(0.45)
    # A batch done between two polls: the whole span.
    assert window([Sample(0.0, 10, 0.0), Sample(0.5, 0, 0.25)], 10)["jobs_per_s"] == 20.0
