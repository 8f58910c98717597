"""Time-step aggregation: from per-step statistics of one tensor to one amax (or one amax per step group).

- ``global``: the estimator on the histogram summed over every time step.
- ``min-mean``: NVIDIA Model Optimizer's diffusers recipe (see ``amax_min_mean``).
- ``groups``: K groups of consecutive time steps, each with its own estimate (``split_groups`` / ``amax_groups``);
  the tensor's single amax is then the global estimate, for runtimes that do not switch ranges per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calibrators.collectors import StepStats
from calibrators.estimators import EstimatorConfig, estimate_amax
from calibrators.settings import (  # noqa: F401  (re-exported: the aggregation settings)
    AGGREGATIONS,
    MEAN_DIVISORS,
    AggregationConfig,
    GroupBounds,
    group_of,
)
from common.errors import UserError

def amax_global(stats: StepStats, config: EstimatorConfig) -> float:
    """The estimator on the histogram of all steps."""
    return estimate_amax(stats.global_histogram(), config)


def amax_min_mean(stats: StepStats, step_fraction: float = 1.0, mean_divisor: str = "steps") -> float:
    """NVIDIA Model Optimizer's "min-mean": the smallest, over steps, of the mean per-call abs-max.

    Source: ``examples/diffusers/quantization/calib/plugin_calib.py`` (``PercentileCalibrator``) in
    NVIDIA/TensorRT-Model-Optimizer, used for Conv2d input quantizers by ``config.py`` (``reset_set_int8_config``)
    and recommended in its README as ``--collect-method min-mean --percentile 1.0``. There, ``collect(x)`` adds the
    abs-max of every call to ``data[i % total_step]`` (the sampler step index), and ``compute_amax`` returns
    ``min(data[s] / total_step for s in range(int(total_step * percentile)))``: note that the per-step *sum over
    calls* is divided by the number of *steps*, not of calls ("steps", the default here, reproduces this; with
    N calls per step it scales the true mean by N / total_step). "calls" divides by the calls instead.

    Here steps are keyed by the time step t, not a call counter: the sampler's step order is t descending, so
    ``step_fraction`` keeps the ``int(S * step_fraction)`` largest t of the S steps seen. The histogram and the
    estimator are not used (ModelOpt's calibrator uses raw abs-maxes). Returns amax > 0.
    """
    order = np.argsort(stats.steps)[::-1]  # sampler order: noisiest (largest t) first
    total_steps = int(stats.steps.size)
    used = int(total_steps * step_fraction)
    if used < 1:
        raise UserError(
            f"aggregation step_fraction={step_fraction!r} keeps no step of the {total_steps} calibrated for "
            f"tensor '{stats.name}'"
        )
    rows = order[:used]
    if mean_divisor == "steps":
        means = stats.absmax_sum[rows] / total_steps
    elif mean_divisor == "calls":
        means = stats.absmax_sum[rows] / stats.calls[rows]
    else:
        raise ValueError(f"unknown mean_divisor {mean_divisor!r}")
    amax = float(means.min())
    if amax > 0.0:
        return amax
    return amax_global(stats, EstimatorConfig("max"))  # a step with only zeros: fall back to the abs-max


def split_groups(steps: Sequence[int] | np.ndarray, k: int) -> list[GroupBounds]:
    """Split the distinct time steps into ``k`` groups of consecutive steps, as equal in size as possible.

    Returns inclusive ``(first, last)`` ranges, ascending, that tile ``[min(steps), max(steps)]`` without gaps
    (a step between two calibrated steps belongs to the group of the next calibrated step below it).
    UserError if there are fewer distinct steps than groups.
    """
    distinct = np.unique(np.asarray(steps, dtype=np.int64))
    if k < 1:
        raise UserError(f"aggregation groups must be >= 1, got {k}")
    if distinct.size < k:
        raise UserError(f"aggregation groups={k} needs at least {k} distinct time steps, got {distinct.size}")
    parts = np.array_split(distinct, k)
    firsts = [int(part[0]) for part in parts]
    lasts = [f - 1 for f in firsts[1:]] + [int(distinct[-1])]
    return list(zip(firsts, lasts, strict=True))


def amax_groups(stats: StepStats, bounds: Sequence[GroupBounds], config: EstimatorConfig) -> list[float]:
    """One estimate per group, on the histogram summed over the tensor's steps inside the group.

    A group in which this tensor has no step gets the tensor's global estimate.
    """
    out: list[float] = []
    for first, last in bounds:
        inside = stats.steps[(stats.steps >= first) & (stats.steps <= last)]
        if inside.size == 0:
            out.append(amax_global(stats, config))
        else:
            out.append(estimate_amax(stats.histogram(inside.tolist()), config))
    return out
