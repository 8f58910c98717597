"""Calibration inputs: NDTC's time-step law, labels that match the trajectory, uniform and baseline sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from calibrators.sources import SourceConfig, TrajectorySource, nearest_steps, ndtc_timesteps
from common.errors import UserError
from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler


def test_ndtc_timesteps_follow_floored_clamped_normal() -> None:
    """Chi-square of 200k draws against the exact law of clamp(floor(N(0.4T, 0.4T)), 0, T-1)."""
    t_max, n = 1000, 200_000
    draws = ndtc_timesteps(n, t_max, 0.4, 0.4, np.random.default_rng(0))
    assert draws.min() == 0 and draws.max() == t_max - 1
    edges = np.linspace(0, t_max, 21).astype(int)  # 20 bins of 50 time steps
    mu, sigma = 0.4 * t_max, 0.4 * t_max
    cdf = stats.norm.cdf(edges, mu, sigma)
    probs = np.diff(cdf)
    probs[0] += stats.norm.cdf(0, mu, sigma)  # everything below 0 is clamped to 0
    probs[-1] += 1 - stats.norm.cdf(t_max, mu, sigma)  # and above T-1 to T-1
    observed = np.histogram(draws, bins=edges)[0]
    p = stats.chisquare(observed, probs * n).pvalue
    assert p > 1e-3
    # a different law (the paper's sigma = T/2) is rejected by the same test
    other = ndtc_timesteps(n, t_max, 0.4, 0.5, np.random.default_rng(0))
    assert stats.chisquare(np.histogram(other, bins=edges)[0], probs * n).pvalue < 1e-6


def test_nearest_steps() -> None:
    schedule = np.array([980, 960, 940, 20, 0], dtype=float)
    got = nearest_steps(np.array([999, 970, 950, 30, 10, 0]), schedule)
    assert got.tolist() == [0, 1, 2, 3, 4, 4]  # ties (970, 950, 10) go to the later, cleaner step


def _source(work: Path, sess: OrtSession, **kwargs: object) -> TrajectorySource:
    sched = json.loads((work / "export.json").read_text())["scheduler"]
    cfg = SourceConfig(**{"samples": 6, "steps": 10, **kwargs})  # type: ignore[arg-type]
    runner = DenoiseRunner(sess, make_scheduler(cfg.scheduler, sched))
    return TrajectorySource(runner, cfg, (1, 16, 16), 1000, batch=4)


def test_ndtc_sample_is_the_trajectory_state_at_its_step(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as sess:
        src = _source(tiny_work, sess, method="ndtc", mu_frac=0.5, sigma_frac=0.3, samples=6)
        samples = list(src)
        schedule = src.schedule()
        assert len(samples) == 6
        for i, s in enumerate(samples):
            assert s.t == int(schedule[s.step])  # the label is the time step the state was produced at
            start = (i // 4) * 4
            noise = src.trajectory_noise(start, min(4, 6 - start))
            state = src.runner.sample(noise, 10, stop_at_step=s.step)[i - start : i - start + 1]
            np.testing.assert_array_equal(s.x, state)
    assert len({s.t for s in samples}) > 1


def test_uniform_keeps_every_kth_step(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as sess:
        samples = list(_source(tiny_work, sess, method="uniform", samples=7, every=3))
    assert [s.step for s in samples] == [2, 5, 8, 2, 5, 8, 2]


def test_noise_and_single_step_baselines(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as sess:
        noise = list(_source(tiny_work, sess, method="noise", samples=50))
        single = list(_source(tiny_work, sess, method="single-step", samples=3))
    assert all(s.step == -1 for s in noise) and len({s.t for s in noise}) > 5
    assert abs(float(np.std(np.concatenate([s.x for s in noise]))) - 1) < 0.05
    assert {s.step for s in single} == {5} and len({s.t for s in single}) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "ptq"}, r"unknown --method 'ptq'; known: ndtc, uniform, noise, single-step"),
    ({"samples": 0}, r"--samples must be >= 1, got 0"),
    ({"every": 51}, r"--every must be in 1\.\.--steps \(50\), got 51"),
    ({"sigma_frac": 0.0}, r"--ndtc-sigma must be > 0, got 0\.0"),
])
def test_bad_settings(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UserError, match=f"^{message}$"):
        SourceConfig(**kwargs)


def test_clipped_model_output_trajectories(tiny_work: Path) -> None:
    """The flag reaches the sampler: states are those of runner.sample(..., use_clipped_model_output=True); unset it
    stays out of the settings (older cache keys still match)."""
    assert "clipped_model_output" not in SourceConfig().to_json()
    assert SourceConfig(clipped_model_output=True).to_json()["clipped_model_output"] is True
    with OrtSession(tiny_work / "model.onnx") as sess:
        src = _source(tiny_work, sess, method="single-step", samples=2, single_step=8, clipped_model_output=True)
        samples = list(src)
        noise = src.trajectory_noise(0, 2)
        clipped = src.runner.sample(noise, 10, stop_at_step=8, use_clipped_model_output=True)
        unset = src.runner.sample(noise, 10, stop_at_step=8)
    np.testing.assert_array_equal(np.concatenate([s.x for s in samples]), clipped)
    assert not np.array_equal(clipped, unset)
