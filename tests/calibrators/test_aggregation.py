"""Time-step aggregation: global, ModelOpt's min-mean (hand computed and simulated), step groups."""

from __future__ import annotations

import numpy as np
import pytest

from calibrators.aggregation import (
    AggregationConfig,
    amax_global,
    amax_groups,
    amax_min_mean,
    group_of,
    split_groups,
)
from calibrators.collectors import StatsCollector, StepStats
from calibrators.estimators import EstimatorConfig
from common.errors import UserError


def call(v: float) -> np.ndarray:
    """One call's activation with abs-max v."""
    return np.array([[v, -v / 2], [0.25 * v, 0.0]])


def hand_stats() -> StepStats:
    """Per-call abs-maxes: t=900: 4, 6; t=600: 3, 5; t=300: 9 (sums 10, 8, 9; calls 2, 2, 1)."""
    c = StatsCollector(64)
    for v, t in ((4.0, 900), (3.0, 600), (9.0, 300), (6.0, 900), (5.0, 600)):
        c.update("x", call(v), t)
    return c.finalize()["x"]


def test_min_mean_by_hand() -> None:
    s = hand_stats()
    assert amax_min_mean(s) == pytest.approx(8.0 / 3.0)  # min(10/3, 8/3, 9/3): sums divided by 3 steps
    assert amax_min_mean(s, mean_divisor="calls") == pytest.approx(4.0)  # min(5, 4, 9)
    # fractions keep the first sampler steps, i.e. the largest t (t=900 first)
    assert amax_min_mean(s, step_fraction=0.67) == pytest.approx(8.0 / 3.0)  # t=900, 600
    assert amax_min_mean(s, step_fraction=0.34) == pytest.approx(10.0 / 3.0)  # t=900 only
    with pytest.raises(UserError, match="step_fraction"):
        amax_min_mean(s, step_fraction=0.3)


def modelopt_min_mean(call_amaxes: list[float], total_step: int, percentile: float) -> float:
    """ModelOpt's PercentileCalibrator (collect_method "min-mean") simulated on scalar per-call abs-maxes."""
    data: dict[int, float] = {}
    for i, amax in enumerate(call_amaxes):
        step = i % total_step
        data[step] = data.get(step, 0.0) + amax
    up_lim = int(total_step * percentile)
    return min(data[i] / total_step for i in range(up_lim))


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_min_mean_matches_modelopt_simulation(fraction: float) -> None:
    rng = np.random.default_rng(0)
    timesteps = [981, 901, 801, 701, 601, 501, 401, 301, 201, 101]  # a 10-step schedule, sampler order
    c = StatsCollector(64)
    call_amaxes = []
    for _prompt_batch in range(7):  # 7 pipeline runs: more calls per step than steps, as in ModelOpt's recipe
        for t in timesteps:
            x = rng.standard_normal((2, 8)) * (1.0 + t / 300.0)
            call_amaxes.append(float(np.abs(x).max()))
            c.update("x", x, t)
    ours = amax_min_mean(c.finalize()["x"], step_fraction=fraction)
    assert ours == pytest.approx(modelopt_min_mean(call_amaxes, len(timesteps), fraction), rel=1e-12)


def test_global_is_estimator_on_all_steps() -> None:
    s = hand_stats()
    assert amax_global(s, EstimatorConfig("max")) == 9.0


def test_split_groups_covers_all_steps_contiguously() -> None:
    steps = np.array([999, 0, 13, 500, 250, 251, 700, 13, 40, 41, 980])
    bounds = split_groups(steps, 3)
    distinct = np.unique(steps)
    assert len(bounds) == 3
    assert bounds[0][0] == distinct[0] and bounds[-1][1] == distinct[-1]
    for (_, last), (first, _) in zip(bounds, bounds[1:]):
        assert first == last + 1  # no gap, no overlap
    mapping = {int(t): group_of(bounds, int(t)) for t in distinct}
    assert sorted(mapping) == distinct.tolist()
    sizes = np.bincount(list(mapping.values()), minlength=3)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == distinct.size
    groups_in_order = [mapping[t] for t in distinct.tolist()]
    assert groups_in_order == sorted(groups_in_order)  # consecutive steps
    assert split_groups(steps, 1) == [(0, 999)]
    with pytest.raises(UserError, match="groups"):
        split_groups(steps, 11)


def test_group_of_outside_goes_to_nearest_end() -> None:
    bounds = [(10, 19), (20, 99)]
    assert [group_of(bounds, t) for t in (0, 10, 19, 20, 99, 500)] == [0, 0, 0, 1, 1, 1]


def test_group_amax_uses_only_the_group_steps() -> None:
    rng = np.random.default_rng(1)
    c = StatsCollector(2048)
    raw: dict[int, list[np.ndarray]] = {}
    for t in (10, 20, 30, 40, 50, 60):
        for _ in range(2):
            x = rng.standard_normal(4000) * (t / 10.0)
            raw.setdefault(t, []).append(x)
            c.update("x", x, t)
    s = c.finalize()["x"]
    bounds = split_groups(s.steps, 3)
    assert bounds == [(10, 29), (30, 49), (50, 60)]
    by_max = amax_groups(s, bounds, EstimatorConfig("max"))
    pct = EstimatorConfig("percentile", percentile=99.0)
    by_pct = amax_groups(s, bounds, pct)
    for g, ts in enumerate(((10, 20), (30, 40), (50, 60))):
        data = np.concatenate([x for t in ts for x in raw[t]])
        assert by_max[g] == np.abs(data).max()
        assert abs(by_pct[g] - np.percentile(np.abs(data), 99.0)) <= s.bin_width
    assert by_max[0] < by_max[1] < by_max[2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "mean"}, "method"),
        ({"groups": 0}, "groups"),
        ({"step_fraction": 0.0}, "step_fraction"),
        ({"step_fraction": 1.5}, "step_fraction"),
        ({"mean_divisor": "samples"}, "mean_divisor"),
    ],
)
def test_aggregation_config_rejects_bad_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(UserError, match=rf"\b{field}\b"):
        AggregationConfig(**kwargs)


def test_aggregation_config_round_trip() -> None:
    a = AggregationConfig("groups", groups=5)
    assert AggregationConfig.from_dict(a.to_dict()) == a
    with pytest.raises(UserError, match="window"):
        AggregationConfig.from_dict({"window": 3})
