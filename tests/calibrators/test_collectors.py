"""StatsCollector: per-step statistics, shared ranges, exact histograms over step sets, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from calibrators.collectors import Collector, StatsCollector, TensorStats
from common.errors import CheckFailed

NUM_BINS = 256


def feed(collector: StatsCollector, seed: int = 0, repeats: int = 3) -> dict[tuple[str, int], list[np.ndarray]]:
    """Feed two tensors at three steps (in sampler order, t descending); return the raw calls by (tensor, t)."""
    rng = np.random.default_rng(seed)
    raw: dict[tuple[str, int], list[np.ndarray]] = {}
    for _ in range(repeats):
        for t in (900, 450, 20):
            for name, scale in (("conv.in", 1.0 + t / 50.0), ("attn.out", 0.01)):
                x = (rng.standard_normal((2, 3, 4, 4)) * scale).astype(np.float32)
                collector.update(name, x, t)
                raw.setdefault((name, t), []).append(x)
    return raw


def test_collector_protocol() -> None:
    assert isinstance(StatsCollector(), Collector)


def test_per_step_statistics_match_numpy() -> None:
    c = StatsCollector(NUM_BINS)
    raw = feed(c)
    stats = c.finalize()
    assert isinstance(stats, TensorStats)
    assert stats.names == ["attn.out", "conv.in"]
    assert stats.steps.tolist() == [20, 450, 900]
    for name in stats.names:
        s = stats[name]
        assert s.steps.tolist() == [20, 450, 900]
        for row, t in enumerate(s.steps.tolist()):
            calls = raw[(name, t)]
            data = np.concatenate([x.ravel() for x in calls]).astype(np.float64)
            assert s.absmax[row] == np.abs(data).max()
            assert s.min[row] == data.min() and s.max[row] == data.max()
            assert s.count[row] == data.size
            assert s.calls[row] == len(calls)
            assert s.absmax_sum[row] == pytest.approx(sum(float(np.abs(x).max()) for x in calls), rel=1e-12)


def test_step_histograms_share_one_range_and_sum_exactly() -> None:
    c = StatsCollector(NUM_BINS)
    raw = feed(c)
    s = c.finalize()["conv.in"]
    all_data = np.concatenate([np.concatenate(raw[("conv.in", t)]).ravel() for t in (20, 450, 900)])
    # the steps have very different scales, yet all rows are binned at the tensor's one (largest) range
    assert s.range == 2.0 ** np.ceil(np.log2(np.abs(all_data).max() * (1 + 1e-12)))
    for row, t in enumerate((20, 450, 900)):
        data = np.concatenate(raw[("conv.in", t)]).ravel()
        expected = np.histogram(np.abs(data.astype(np.float64)), bins=NUM_BINS, range=(0.0, s.range))[0]
        np.testing.assert_array_equal(s.counts[row], expected)
    g = s.global_histogram()
    expected = np.histogram(np.abs(all_data.astype(np.float64)), NUM_BINS, (0, s.range))[0]
    np.testing.assert_array_equal(g.counts, expected)
    assert g.absmax == np.abs(all_data).max() and g.count == all_data.size
    sub = np.concatenate([np.concatenate(raw[("conv.in", t)]).ravel() for t in (20, 900)])
    h = s.histogram([900, 20])
    np.testing.assert_array_equal(h.counts, np.histogram(np.abs(sub.astype(np.float64)), NUM_BINS, (0, s.range))[0])
    assert h.absmax == np.abs(sub).max()
    assert h.min == sub.min() and h.max == sub.max()


def test_steps_are_sorted_whatever_the_arrival_order() -> None:
    c = StatsCollector(16)
    for t in (5, 999, 0, 400):
        c.update("x", np.array([float(t + 1)]), t)
    s = c.finalize()["x"]
    assert s.steps.tolist() == [0, 5, 400, 999]
    assert s.absmax.tolist() == [1.0, 6.0, 401.0, 1000.0]


def test_memory_does_not_grow_with_calls() -> None:
    small, large = StatsCollector(NUM_BINS), StatsCollector(NUM_BINS)
    feed(small, repeats=1)
    feed(large, repeats=20)
    a, b = small.finalize(), large.finalize()

    def nbytes(stats: TensorStats) -> int:
        arrays = [a for s in stats.tensors.values() for a in vars(s).values() if isinstance(a, np.ndarray)]
        return sum(a.nbytes for a in arrays)

    assert nbytes(a) == nbytes(b)
    assert b["conv.in"].counts.shape == (3, NUM_BINS)
    assert int(b["conv.in"].calls.sum()) == 60


def test_non_finite_activation_is_a_failed_check_naming_tensor_and_step() -> None:
    c = StatsCollector(16)
    c.update("ok", np.ones(3), 7)
    with pytest.raises(CheckFailed, match=r"'down.0.conv' at time step 12 .*NaN"):
        c.update("down.0.conv", np.array([1.0, np.nan]), 12)
    with pytest.raises(CheckFailed):
        c.update("ok", np.array([np.inf]), 3)
    stats = c.finalize()
    assert stats.names == ["ok"]
    assert stats["ok"].steps.tolist() == [7]  # no empty step left behind


@pytest.mark.parametrize("t", [-1, 2.0, True, "5"])
def test_time_step_must_be_a_non_negative_int(t: object) -> None:
    with pytest.raises(ValueError):
        StatsCollector(16).update("x", np.ones(2), t)  # type: ignore[arg-type]


def test_finalize_is_a_snapshot() -> None:
    c = StatsCollector(16)
    c.update("x", np.array([1.0]), 3)
    first = c.finalize()
    c.update("x", np.array([100.0]), 3)
    c.update("x", np.array([2.0]), 4)
    assert first["x"].absmax.tolist() == [1.0] and first["x"].range == 2.0
    second = c.finalize()
    assert second["x"].absmax.tolist() == [100.0, 2.0] and second["x"].range == 128.0


def test_unknown_step_and_empty_input() -> None:
    c = StatsCollector(16)
    c.update("x", np.zeros((0, 3)), 1)
    c.update("x", np.array([0.5]), 2)
    s = c.finalize()["x"]
    assert s.steps.tolist() == [2]
    with pytest.raises(KeyError):
        s.histogram([2, 3])
