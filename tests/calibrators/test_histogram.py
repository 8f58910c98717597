"""AbsHistogram: exact re-binning, exact merging, exact extremes, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from calibrators.histogram import AbsHistogram, merge_bins, range_for


def reference_counts(data: np.ndarray, num_bins: int, r: float) -> np.ndarray:
    """Histogram of |data| binned directly at range r."""
    return np.histogram(np.abs(data), bins=num_bins, range=(0.0, r))[0]


def test_range_for_is_smallest_power_of_two_strictly_above() -> None:
    assert range_for(0.75) == 1.0
    assert range_for(1.0) == 2.0  # strictly above: a value equal to R would need a closed top bin
    assert range_for(1.5) == 2.0
    assert range_for(3e-5) == 2.0**-15
    assert range_for(1000.0) == 1024.0
    assert range_for(0.0) == 0.0
    with pytest.raises(ValueError):
        range_for(float("inf"))


def test_hand_example_with_eight_bins() -> None:
    h = AbsHistogram(num_bins=8)
    h.update(np.array([0.1, -0.9]))  # R = 1, width 0.125: bins 0 and 7
    assert h.range == 1.0
    assert h.counts.tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    h.update(np.array([1.5]))  # R = 2, width 0.25: 0.1 -> 0, 0.9 -> 3, 1.5 -> 6
    assert h.range == 2.0
    assert h.counts.tolist() == [1, 0, 0, 1, 0, 0, 1, 0]
    h.update(np.array([-5.0]))  # R = 8, width 1: 0.1, 0.9 -> 0; 1.5 -> 1; 5 -> 5
    assert h.range == 8.0
    assert h.counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0]
    assert (h.absmax, h.min, h.max, h.count) == (5.0, -5.0, 1.5, 4)


def test_streaming_rebinning_is_exact_including_values_on_bin_edges() -> None:
    rng = np.random.default_rng(1)
    num_bins = 256
    batches = []
    ranges = []
    h = AbsHistogram(num_bins)
    for k in range(6):
        scale = 3.0**k
        x = rng.standard_normal(5000) * scale
        # values exactly on edges of the current and of later (coarser) grids, and on powers of two
        r_now = range_for(float(np.abs(x).max()))
        edges = np.arange(num_bins) * (r_now / num_bins)
        x = np.concatenate([x, edges[::7], -edges[1::11], [r_now / 2, -r_now / 4]])
        batches.append(x)
        h.update(x)
        ranges.append(h.range)
    data = np.concatenate(batches)
    assert len(set(ranges)) >= 4, "the test must exercise several doublings"
    assert h.range == range_for(float(np.abs(data).max()))
    np.testing.assert_array_equal(h.counts, reference_counts(data, num_bins, h.range))
    assert h.counts.dtype == np.int64
    assert h.absmax == np.abs(data).max()
    assert h.min == data.min() and h.max == data.max()
    assert h.count == data.size == h.counts.sum()


def test_zeros_first_then_values() -> None:
    h = AbsHistogram(64)
    h.update(np.zeros((3, 5)))
    assert h.range == 0.0 and h.counts[0] == 15 and h.absmax == 0.0
    x = np.array([0.0, 0.3, -2.5, 7.0])
    h.update(x)
    data = np.concatenate([np.zeros(15), x])
    assert h.range == 8.0
    np.testing.assert_array_equal(h.counts, reference_counts(data, 64, 8.0))


def test_all_zero_input_stays_unset() -> None:
    h = AbsHistogram(16)
    h.update(np.zeros(10, dtype=np.float32))
    h.update(np.zeros(0))
    assert h.range == 0.0 and h.bin_width == 0.0
    assert h.counts[0] == 10 and h.counts[1:].sum() == 0
    assert (h.absmax, h.min, h.max, h.count) == (0.0, 0.0, 0.0, 10)


def test_merge_is_exact_and_does_not_mutate() -> None:
    rng = np.random.default_rng(2)
    a_data = [rng.laplace(size=3000) * 0.01, rng.laplace(size=100) * 0.05]
    b_data = [rng.standard_normal(4000) * 40.0]
    a, b = AbsHistogram(512), AbsHistogram(512)
    for x in a_data:
        a.update(x)
    for x in b_data:
        b.update(x)
    a_counts, a_range = a.counts.copy(), a.range
    merged = a.merge(b)
    data = np.concatenate(a_data + b_data)
    assert merged.range == max(a.range, b.range) == range_for(float(np.abs(data).max()))
    np.testing.assert_array_equal(merged.counts, reference_counts(data, 512, merged.range))
    np.testing.assert_array_equal(b.merge(a).counts, merged.counts)
    assert (merged.absmax, merged.min, merged.max, merged.count) == (
        np.abs(data).max(),
        data.min(),
        data.max(),
        data.size,
    )
    np.testing.assert_array_equal(a.counts, a_counts)
    assert a.range == a_range


def test_merge_with_all_zero_histogram() -> None:
    z, h = AbsHistogram(32), AbsHistogram(32)
    z.update(np.zeros(7))
    h.update(np.array([0.5, 1.25]))
    m = z.merge(h)
    np.testing.assert_array_equal(m.counts, reference_counts(np.array([0.0] * 7 + [0.5, 1.25]), 32, 2.0))


def test_merge_rejects_different_bin_counts() -> None:
    with pytest.raises(ValueError):
        AbsHistogram(8).merge(AbsHistogram(16))


def test_merge_bins_pairs_and_keeps_total() -> None:
    c = np.arange(8, dtype=np.int64)
    assert merge_bins(c, 1).tolist() == [1, 5, 9, 13, 0, 0, 0, 0]
    assert merge_bins(c, 2).tolist() == [6, 22, 0, 0, 0, 0, 0, 0]
    assert merge_bins(c, 5).tolist() == [28, 0, 0, 0, 0, 0, 0, 0]


def test_non_finite_input_is_rejected_and_leaves_state_unchanged() -> None:
    h = AbsHistogram(16)
    h.update(np.array([1.0, -0.5]))
    before = (h.counts.copy(), h.range, h.absmax, h.count)
    for bad in (np.array([1.0, np.nan]), np.array([np.inf])):
        with pytest.raises(ValueError):
            h.update(bad)
    np.testing.assert_array_equal(h.counts, before[0])
    assert (h.range, h.absmax, h.count) == before[1:]


def test_memory_is_bounded_and_dtypes_accepted() -> None:
    h = AbsHistogram(128)
    rng = np.random.default_rng(3)
    for k in range(50):
        h.update(rng.standard_normal((4, 8)).astype(np.float16) * (k + 1))
    h.update(np.array([[3, -900]], dtype=np.int32))
    assert h.counts.shape == (128,) and h.counts.dtype == np.int64
    assert h.count == 50 * 32 + 2 and h.absmax == 900.0


@pytest.mark.parametrize("num_bins", [0, 3, 100])
def test_num_bins_must_be_power_of_two(num_bins: int) -> None:
    with pytest.raises(ValueError):
        AbsHistogram(num_bins)


def test_float32_path_bins_exactly_like_float64() -> None:
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(50_000) * 5).astype(np.float32)
    edges = (np.arange(0, 2048, 3) * (8.0 / 2048)).astype(np.float32)  # exact edges of the final grid (R = 8 or 16)
    x = np.concatenate([x, edges, -edges]).astype(np.float32)
    h32, h64 = AbsHistogram(), AbsHistogram()
    h32.update(x)
    h64.update(x.astype(np.float64))
    assert h32.range == h64.range
    np.testing.assert_array_equal(h32.counts, h64.counts)
    np.testing.assert_array_equal(h32.counts, reference_counts(x.astype(np.float64), 2048, h32.range))


def test_tiny_float32_values() -> None:
    x = np.array([1e-40, -3e-39, 2.5e-38], dtype=np.float32)  # subnormal float32 values
    h = AbsHistogram(64)
    h.update(x)
    np.testing.assert_array_equal(h.counts, reference_counts(x.astype(np.float64), 64, h.range))
    assert h.absmax == float(np.float32(2.5e-38))
