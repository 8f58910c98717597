"""A streaming histogram of |x| with bounded memory and exact re-binning.

Bins cover ``[0, R)`` with ``num_bins`` half-open bins of width ``R / num_bins``. ``R`` is always a power of two
strictly greater than every |x| seen, so the top bin is half-open too. When a value reaches ``R``, ``R`` doubles
(as often as needed) and pairs of bins merge (``c'[i] = c[2i] + c[2i+1]``). Because ``R`` and ``num_bins`` are
powers of two, ``floor(|x| * num_bins / R)`` is computed without rounding and the merged histogram equals, bin for
bin, the histogram of all data binned directly at the final ``R``: nothing is approximated.

While only zeros have been seen, ``R`` is 0 ("unset"); the zeros sit in bin 0, which holds 0 for any later ``R``.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_NUM_BINS = 2048


def range_for(absmax: float) -> float:
    """The smallest power of two strictly greater than ``absmax`` (> 0, finite); 0.0 for ``absmax == 0``."""
    if absmax == 0.0:
        return 0.0
    if not math.isfinite(absmax) or absmax < 0.0:
        raise ValueError(f"absmax must be finite and >= 0, got {absmax!r}")
    _, exponent = math.frexp(absmax)  # absmax = m * 2**exponent with 0.5 <= m < 1
    return math.ldexp(1.0, exponent)


def is_power_of_two(x: float) -> bool:
    """True for finite x = 2**k (any integer k)."""
    return x > 0.0 and math.isfinite(x) and math.frexp(x)[0] == 0.5


def _check_num_bins(num_bins: int) -> None:
    if not isinstance(num_bins, int) or num_bins < 2 or num_bins & (num_bins - 1):
        raise ValueError(f"num_bins must be a power of two >= 2, got {num_bins!r}")


def merge_bins(counts: np.ndarray, doublings: int) -> np.ndarray:
    """Counts after ``R`` doubles ``doublings`` times: adjacent pairs merge, the upper half becomes empty.

    counts: int64 (num_bins,). Returns a new int64 (num_bins,) array with the same total.
    """
    out = np.array(counts, dtype=np.int64, copy=True)
    n = out.size
    for _ in range(doublings):
        merged = out.reshape(n // 2, 2).sum(axis=1)
        out = np.zeros(n, dtype=np.int64)
        out[: n // 2] = merged
    return out


class AbsHistogram:
    """Histogram of |x| over ``[0, range)``, plus exact abs-max, signed min/max and element count.

    counts: int64 (num_bins,). range: R in the data's units (0.0 while only zeros were seen).
    bin_width: R / num_bins (same units). min/max: signed extremes (+inf/-inf while empty).
    """

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS) -> None:
        _check_num_bins(num_bins)
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.range = 0.0
        self.absmax = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    @property
    def bin_width(self) -> float:
        """Width of one bin (R / num_bins); 0.0 while the range is unset."""
        return self.range / self.num_bins

    def ensure_range(self, r: float) -> None:
        """Grow R (by exact doublings) until ``R >= r``; ``r`` must be 0 or a power of two."""
        if r <= self.range:
            return
        if not is_power_of_two(r):
            raise ValueError(f"range must be a power of two, got {r!r}")
        if self.range == 0.0:
            self.range = r  # only zeros so far: they stay in bin 0
            return
        doublings = 0
        new_range = self.range
        while new_range < r:
            new_range *= 2.0
            doublings += 1
        self.counts = merge_bins(self.counts, doublings)
        self.range = new_range

    def update(self, array: np.ndarray) -> float:
        """Add every element of ``array`` (any shape, real dtype); return this array's abs-max (0.0 if empty).

        Raises ValueError if the array holds NaN or inf (the histogram is then unchanged).
        """
        a = np.asarray(array)
        if a.size == 0:
            return 0.0
        # float16/float32 are binned in float32 (|x| and the power-of-two scaling below are exact there too)
        work = np.float32 if a.dtype in (np.float16, np.float32) else np.float64
        flat = np.abs(a.reshape(-1), dtype=work)
        absmax = float(flat.max())
        if not math.isfinite(absmax):
            raise ValueError("array holds NaN or inf")
        self.ensure_range(range_for(absmax))
        if self.range == 0.0:
            self.counts[0] += flat.size
        else:
            scale = self.num_bins / self.range
            if scale > 2.0**100:  # would overflow float32 (absmax < ~1e-27): bin in float64
                flat = flat.astype(np.float64)
            flat *= flat.dtype.type(scale)  # a power of two: exact, and < num_bins since |x| < R
            self.counts += np.bincount(flat.astype(np.int64), minlength=self.num_bins)  # truncation = floor
        self.absmax = max(self.absmax, absmax)
        self.min = min(self.min, float(a.min()))
        self.max = max(self.max, float(a.max()))
        self.count += int(flat.size)
        return absmax

    def copy(self) -> AbsHistogram:
        """An independent copy."""
        out = AbsHistogram(self.num_bins)
        out.counts = self.counts.copy()
        out.range, out.absmax, out.min, out.max, out.count = self.range, self.absmax, self.min, self.max, self.count
        return out

    def merge(self, other: AbsHistogram) -> AbsHistogram:
        """A new histogram of the union of both data sets (both are brought to the larger R first; exact)."""
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge histograms with {self.num_bins} and {other.num_bins} bins")
        a, b = self.copy(), other.copy()
        r = max(a.range, b.range)
        a.ensure_range(r)
        b.ensure_range(r)
        a.counts = a.counts + b.counts
        a.absmax = max(a.absmax, b.absmax)
        a.min = min(a.min, b.min)
        a.max = max(a.max, b.max)
        a.count += b.count
        return a

    @classmethod
    def from_parts(
        cls, counts: np.ndarray, range_: float, absmax: float, min_: float, max_: float, count: int
    ) -> AbsHistogram:
        """Rebuild a histogram from stored fields (counts int64 (num_bins,); range_ 0 or a power of two)."""
        counts = np.asarray(counts, dtype=np.int64)
        _check_num_bins(int(counts.size))
        if range_ != 0.0 and not is_power_of_two(range_):
            raise ValueError(f"range must be 0 or a power of two, got {range_!r}")
        out = cls(int(counts.size))
        out.counts = counts.copy()
        out.range, out.absmax, out.count = float(range_), float(absmax), int(count)
        out.min, out.max = float(min_), float(max_)
        return out

    def __repr__(self) -> str:
        return (
            f"AbsHistogram(num_bins={self.num_bins}, range={self.range!r}, absmax={self.absmax!r}, "
            f"count={self.count})"
        )
