"""Streaming activation statistics per tensor and per diffusion time step, in bounded memory.

A runner feeds every tensor a QDQ rule may quantize through ``Collector.update(name, array, t)``, once per UNet call
(one call = one batch that shares the time step ``t``; split mixed-``t`` batches before calling). ``finalize()``
returns a ``TensorStats``: per tensor and per step the abs-max, min, max, element count, number of calls, the sum of
per-call abs-maxes (for ModelOpt's "min-mean") and a histogram of |x|. All histograms of one tensor share one range
``R`` (see ``calibrators.histogram``), so histograms over any set of steps are exact sums of rows.

Memory is O(tensors x steps x bins) int64 counts: it never grows with the number of samples or calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from calibrators.histogram import DEFAULT_NUM_BINS, AbsHistogram
from common.errors import CheckFailed


@dataclass(frozen=True, eq=False)
class StepStats:
    """Statistics of one tensor, one row per time step (S distinct steps, B bins; values in the tensor's units).

    steps: int64 (S,) ascending diffusion time steps t. absmax/min/max: float64 (S,). count: int64 (S,) elements.
    calls: int64 (S,) update() calls. absmax_sum: float64 (S,) sum over calls of each call's abs-max.
    counts: int64 (S, B) histograms of |x| over ``[0, range)``, all with the same ``range``.
    """

    name: str
    steps: np.ndarray
    absmax: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: np.ndarray
    calls: np.ndarray
    absmax_sum: np.ndarray
    counts: np.ndarray
    range: float

    @property
    def num_bins(self) -> int:
        """Number of histogram bins B."""
        return int(self.counts.shape[1])

    @property
    def bin_width(self) -> float:
        """Width of one bin, ``range / B`` (0.0 if the tensor was all zeros)."""
        return self.range / self.num_bins

    def rows(self, steps: Iterable[int]) -> np.ndarray:
        """Row indices (int64) of the given time steps; KeyError for a step that was never seen."""
        wanted = np.unique(np.asarray(list(steps), dtype=np.int64))
        idx = np.searchsorted(self.steps, wanted)
        ok = (idx < self.steps.size) & (self.steps[np.minimum(idx, self.steps.size - 1)] == wanted)
        if not np.all(ok):
            raise KeyError(f"tensor '{self.name}' has no statistics for steps {wanted[~ok].tolist()}")
        return idx.astype(np.int64)

    def histogram(self, steps: Iterable[int] | None = None) -> AbsHistogram:
        """The exact histogram over the given steps (all steps if None)."""
        rows = np.arange(self.steps.size) if steps is None else self.rows(steps)
        if rows.size == 0:
            raise ValueError("histogram over an empty set of steps")
        return AbsHistogram.from_parts(
            self.counts[rows].sum(axis=0),
            self.range,
            float(self.absmax[rows].max()),
            float(self.min[rows].min()),
            float(self.max[rows].max()),
            int(self.count[rows].sum()),
        )

    def global_histogram(self) -> AbsHistogram:
        """The exact histogram over all steps."""
        return self.histogram(None)


@dataclass(frozen=True, eq=False)
class TensorStats:
    """What a collector hands to the range estimators: ``StepStats`` by ONNX tensor name."""

    tensors: Mapping[str, StepStats]
    num_bins: int

    @property
    def names(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self.tensors)

    @property
    def steps(self) -> np.ndarray:
        """The union of all tensors' time steps, int64 ascending."""
        if not self.tensors:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([s.steps for s in self.tensors.values()]))

    def __getitem__(self, name: str) -> StepStats:
        return self.tensors[name]

    def global_histogram(self, name: str) -> AbsHistogram:
        """Histogram of tensor ``name`` summed over all its steps."""
        return self.tensors[name].global_histogram()

    def histogram(self, name: str, steps: Iterable[int]) -> AbsHistogram:
        """Histogram of tensor ``name`` summed over ``steps``."""
        return self.tensors[name].histogram(steps)


@runtime_checkable
class Collector(Protocol):
    """Receives activations during calibration and summarises them."""

    def update(self, tensor_name: str, array: np.ndarray, t: int) -> None:
        """Add one call's activation ``array`` (any shape) of ``tensor_name`` at diffusion time step ``t``."""
        ...

    def finalize(self) -> TensorStats:
        """The statistics gathered so far (does not reset the collector)."""
        ...


class _StepAccumulator:
    """Running statistics of one (tensor, step)."""

    def __init__(self, num_bins: int) -> None:
        self.hist = AbsHistogram(num_bins)
        self.calls = 0
        self.absmax_sum = 0.0


class _TensorAccumulator:
    """All steps of one tensor, kept at one shared range."""

    def __init__(self, num_bins: int) -> None:
        self.num_bins = num_bins
        self.range = 0.0
        self.steps: dict[int, _StepAccumulator] = {}

    def update(self, array: np.ndarray, t: int) -> None:
        step = self.steps.get(t)
        if step is None:
            step = self.steps[t] = _StepAccumulator(self.num_bins)
        step.hist.ensure_range(self.range)
        call_absmax = step.hist.update(array)  # ValueError on NaN/inf, before any state changes
        step.calls += 1
        step.absmax_sum += call_absmax
        if step.hist.range > self.range:
            self.range = step.hist.range
            for other in self.steps.values():
                other.hist.ensure_range(self.range)

    def finalize(self, name: str) -> StepStats:
        ts = sorted(self.steps)
        acc = [self.steps[t] for t in ts]
        for a in acc:
            a.hist.ensure_range(self.range)
        return StepStats(
            name=name,
            steps=np.asarray(ts, dtype=np.int64),
            absmax=np.asarray([a.hist.absmax for a in acc], dtype=np.float64),
            min=np.asarray([a.hist.min for a in acc], dtype=np.float64),
            max=np.asarray([a.hist.max for a in acc], dtype=np.float64),
            count=np.asarray([a.hist.count for a in acc], dtype=np.int64),
            calls=np.asarray([a.calls for a in acc], dtype=np.int64),
            absmax_sum=np.asarray([a.absmax_sum for a in acc], dtype=np.float64),
            counts=np.stack([a.hist.counts for a in acc]).astype(np.int64),
            range=self.range,
        )


class StatsCollector:
    """The standard collector: per tensor and per time step abs-max, min/max, counts and a |x| histogram."""

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS) -> None:
        AbsHistogram(num_bins)  # validates num_bins
        self.num_bins = num_bins
        self._tensors: dict[str, _TensorAccumulator] = {}

    def update(self, tensor_name: str, array: np.ndarray, t: int) -> None:
        """Add one call's ``array`` of ``tensor_name`` at time step ``t`` (int >= 0). Empty arrays are ignored.

        Raises CheckFailed if the array holds NaN or inf (the FP32 model misbehaves on this input).
        """
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"time step must be an int >= 0, got {t!r}")
        a = np.asarray(array)
        if a.size == 0:
            return
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"tensor '{tensor_name}': expected a real numeric array, got dtype {a.dtype}")
        acc = self._tensors.get(tensor_name)
        if acc is None:
            acc = self._tensors[tensor_name] = _TensorAccumulator(self.num_bins)
        try:
            acc.update(a, int(t))
        except ValueError as exc:
            if acc.steps.get(int(t)) is not None and acc.steps[int(t)].calls == 0:
                del acc.steps[int(t)]
            if not acc.steps:
                del self._tensors[tensor_name]
            raise CheckFailed(f"tensor '{tensor_name}' at time step {int(t)} holds NaN or inf") from exc

    def finalize(self) -> TensorStats:
        """Freeze the statistics into a ``TensorStats`` (copies; the collector can keep collecting)."""
        return TensorStats(
            tensors={name: self._tensors[name].finalize(name) for name in sorted(self._tensors)},
            num_bins=self.num_bins,
        )
