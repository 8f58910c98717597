"""From collected statistics to a ranges file: every tensor's amax by the estimator and the time-step aggregation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibrators.aggregation import amax_global, amax_groups, amax_min_mean, split_groups
from calibrators.collectors import TensorStats
from calibrators.ranges import CalibrationSettings, StepSummary, TensorRanges
from calibrators.settings import AggregationConfig, EstimatorConfig
from common.errors import UserError


def ranges_from_stats(
    stats: TensorStats,
    estimator: EstimatorConfig,
    aggregation: AggregationConfig,
    *,
    model_sha256: str,
    calibration: str,
    calibration_params: Mapping[str, Any],
    seed: int,
) -> TensorRanges:
    """Estimate every tensor's amax from collected statistics and record how.

    aggregation "global": the estimator on all steps; "min-mean": ModelOpt's min over steps of the mean per-call
    abs-max (requires estimator "max", since ModelOpt uses raw abs-maxes); "groups": ``aggregation.groups`` groups
    of consecutive steps (shared by all tensors) each with its own estimate, and the global estimate as amax.
    """
    if aggregation.method == "min-mean" and estimator.method != "max":
        raise UserError(
            f"aggregation 'min-mean' uses per-call abs-maxes as ModelOpt does; it cannot be combined with "
            f"estimator '{estimator.method}' (use estimator 'max')"
        )
    bounds = split_groups(stats.steps, aggregation.groups) if aggregation.method == "groups" else []
    amax: dict[str, float] = {}
    group_amax: dict[str, list[float]] = {}
    summary: dict[str, StepSummary] = {}
    for name in stats.names:
        s = stats[name]
        if aggregation.method == "min-mean":
            amax[name] = amax_min_mean(s, aggregation.step_fraction, aggregation.mean_divisor)
        else:
            amax[name] = amax_global(s, estimator)
        if bounds:
            group_amax[name] = amax_groups(s, bounds, estimator)
        summary[name] = StepSummary(steps=s.steps.tolist(), absmax=s.absmax.tolist())
    settings = CalibrationSettings(
        method=calibration,
        params=calibration_params,
        estimator=estimator,
        aggregation=aggregation,
        seed=seed,
        num_bins=stats.num_bins,
    )
    return TensorRanges(
        model_sha256=model_sha256,
        settings=settings,
        amax=amax,
        group_bounds=bounds,
        group_amax=group_amax,
        step_summary=summary,
    )
