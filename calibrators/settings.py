"""The settings of calibration that its result records: estimator and time-step aggregation configs, step groups.

Plain frozen dataclasses with no numerics, so the ranges file (calibrators/ranges.py) reads and writes them without
the estimators' or collectors' code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np

from common.errors import UserError

#: The estimator names (calibrators/estimators.py ESTIMATORS holds one function for each).
ESTIMATOR_METHODS = ("max", "percentile", "mse", "entropy")

SUPPORTED_BITS = (8, 4)


def qmax_for(bits: int) -> int:
    """Largest quantized magnitude of a symmetric signed ``bits``-bit integer: 127 for 8, 7 for 4."""
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class EstimatorConfig:
    """How to turn a histogram into an amax.

    method: a key of ``ESTIMATORS`` ("max", "percentile", "mse", "entropy").
    bits: 8 or 4. percentile: in (0, 100], for "percentile".
    p: the Lp exponent of the "mse" error (2.0 = MSE; PTQ4DM and Q-Diffusion use 2.4).
    mse_candidates: "mse" tries amax = absmax * k / mse_candidates for k = 1 .. mse_candidates.
    entropy_start_bin: "entropy" tries clipping at bin edges from this bin on (TensorRT: 128).
    """

    method: str
    bits: int = 8
    percentile: float = 99.99
    p: float = 2.0
    mse_candidates: int = 200
    entropy_start_bin: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in ESTIMATOR_METHODS:
            raise UserError(f"estimator method must be one of {sorted(ESTIMATOR_METHODS)}, got {self.method!r}")
        if not _is_int(self.bits) or self.bits not in SUPPORTED_BITS:
            raise UserError(f"estimator bits must be one of {list(SUPPORTED_BITS)}, got {self.bits!r}")
        if not _is_real(self.percentile) or not 0.0 < self.percentile <= 100.0:
            raise UserError(f"estimator percentile must be in (0, 100], got {self.percentile!r}")
        if not _is_real(self.p) or not 0.0 < self.p <= 16.0:
            raise UserError(f"estimator p must be in (0, 16], got {self.p!r}")
        if not _is_int(self.mse_candidates) or not 2 <= self.mse_candidates <= 100_000:
            raise UserError(f"estimator mse_candidates must be an integer in [2, 100000], got {self.mse_candidates!r}")
        if not _is_int(self.entropy_start_bin) or self.entropy_start_bin < 1:
            raise UserError(f"estimator entropy_start_bin must be an integer >= 1, got {self.entropy_start_bin!r}")
        object.__setattr__(self, "percentile", float(self.percentile))
        object.__setattr__(self, "p", float(self.p))

    @property
    def qmax(self) -> int:
        """127 for 8 bits, 7 for 4 bits."""
        return qmax_for(self.bits)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, one key per field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EstimatorConfig:
        """Inverse of ``to_dict``; UserError on unknown or missing keys or bad values."""
        return cls(**config_kwargs(cls, data, "estimator"))


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return _is_int(x) or (isinstance(x, (float, np.floating)) and math.isfinite(float(x)))


def config_kwargs(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from ``data``, naming unknown or missing keys in a UserError."""
    if not isinstance(data, Mapping):
        raise UserError(f"{what} settings must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown {what} setting(s) {unknown}; known: {sorted(names)}")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise UserError(f"missing {what} setting(s) {missing}")
    return dict(data)



AGGREGATIONS = ("global", "min-mean", "groups")
MEAN_DIVISORS = ("steps", "calls")

#: Inclusive time-step range ``(first, last)`` of one group.
GroupBounds = tuple[int, int]


@dataclass(frozen=True)
class AggregationConfig:
    """How per-step statistics become ranges.

    method: "global", "min-mean" or "groups".
    groups: K, the number of step groups for "groups" (>= 1).
    step_fraction: for "min-mean", the fraction of sampler steps used, counted from the first (noisiest) step;
        ModelOpt's ``percentile`` argument (1.0 = all steps).
    mean_divisor: for "min-mean", what the per-step sum of per-call abs-maxes is divided by: "steps" is ModelOpt's
        code as written (the number of steps), "calls" the number of calls at that step (a true mean).
    """

    method: str = "global"
    groups: int = 4
    step_fraction: float = 1.0
    mean_divisor: str = "steps"

    def __post_init__(self) -> None:
        if self.method not in AGGREGATIONS:
            raise UserError(f"aggregation method must be one of {list(AGGREGATIONS)}, got {self.method!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, (int, np.integer)) or self.groups < 1:
            raise UserError(f"aggregation groups must be an integer >= 1, got {self.groups!r}")
        if isinstance(self.step_fraction, bool) or not isinstance(self.step_fraction, (int, float, np.floating)):
            raise UserError(f"aggregation step_fraction must be a number in (0, 1], got {self.step_fraction!r}")
        if not 0.0 < float(self.step_fraction) <= 1.0:
            raise UserError(f"aggregation step_fraction must be in (0, 1], got {self.step_fraction!r}")
        if self.mean_divisor not in MEAN_DIVISORS:
            raise UserError(f"aggregation mean_divisor must be one of {list(MEAN_DIVISORS)}, got {self.mean_divisor!r}")
        object.__setattr__(self, "groups", int(self.groups))
        object.__setattr__(self, "step_fraction", float(self.step_fraction))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, one key per field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AggregationConfig:
        """Inverse of ``to_dict``; UserError on unknown keys or bad values."""
        return cls(**config_kwargs(cls, data, "aggregation"))


def group_of(bounds: Sequence[GroupBounds], t: int) -> int:
    """Index of the group holding time step ``t``; steps outside every group go to the nearest end group."""
    if not bounds:
        raise ValueError("no groups")
    for index, (first, last) in enumerate(bounds):
        if first <= t <= last:
            return index
    return 0 if t < bounds[0][0] else len(bounds) - 1
