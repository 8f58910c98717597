"""Range estimators against brute force on raw samples, closed forms and a loop reference of TensorRT's method."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy, norm

from calibrators.estimators import (
    ESTIMATORS,
    ZERO_TENSOR_AMAX,
    EstimatorConfig,
    amax_entropy,
    amax_max,
    amax_mse,
    amax_percentile,
    entropy_divergences,
    estimate_amax,
    expected_errors,
    qmax_for,
)
from calibrators.histogram import AbsHistogram
from common.errors import UserError


def hist_of(x: np.ndarray, num_bins: int = 2048) -> AbsHistogram:
    h = AbsHistogram(num_bins)
    h.update(x)
    return h


def sample_errors(x: np.ndarray, amaxes: np.ndarray, bits: int, p: float) -> np.ndarray:
    """Brute force: mean |x - Q(x)|^p on the raw samples for each candidate amax."""
    qmax = qmax_for(bits)
    out = []
    for amax in amaxes:
        s = amax / qmax
        q = np.clip(np.round(x / s), -qmax, qmax) * s
        out.append(np.mean(np.abs(x - q) ** p))
    return np.asarray(out)


def gaussian_mse(alpha: np.ndarray, qmax: int) -> np.ndarray:
    """Closed form E[(x - Q(x))^2] for x ~ N(0, 1), clip alpha, step alpha / qmax (normal partial moments)."""
    out = []
    for a in np.atleast_1d(alpha):
        step = a / qmax
        lo = np.concatenate([[0.0], (np.arange(qmax) + 0.5) * step])
        hi = np.concatenate([(np.arange(qmax) + 0.5) * step, [a]])
        c = np.round((lo + hi) / 2 / step) * step
        inside = (1 + c**2) * (norm.cdf(hi) - norm.cdf(lo)) - (hi * norm.pdf(hi) - lo * norm.pdf(lo))
        inside += 2 * c * (norm.pdf(hi) - norm.pdf(lo))
        tail = (1 + a**2) * norm.sf(a) - a * norm.pdf(a)
        out.append(2 * (inside.sum() + tail))
    return np.asarray(out)


# ------------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "kl"}, "method"),
        ({"method": "mse", "bits": 7}, "bits"),
        ({"method": "mse", "bits": True}, "bits"),
        ({"method": "percentile", "percentile": 0.0}, "percentile"),
        ({"method": "percentile", "percentile": 100.5}, "percentile"),
        ({"method": "mse", "p": 0.0}, "p"),
        ({"method": "mse", "p": float("nan")}, "p"),
        ({"method": "mse", "mse_candidates": 1}, "mse_candidates"),
        ({"method": "entropy", "entropy_start_bin": 0}, "entropy_start_bin"),
    ],
)
def test_config_rejects_bad_fields_naming_them(kwargs: dict, field: str) -> None:
    with pytest.raises(UserError, match=rf"\b{field}\b"):
        EstimatorConfig(**kwargs)


def test_config_is_frozen_and_round_trips() -> None:
    c = EstimatorConfig("mse", bits=4, p=2.4)
    with pytest.raises(AttributeError):
        c.bits = 8  # type: ignore[misc]
    assert EstimatorConfig.from_dict(c.to_dict()) == c
    assert c.qmax == 7 and EstimatorConfig("max").qmax == 127
    with pytest.raises(UserError, match="colour"):
        EstimatorConfig.from_dict({**c.to_dict(), "colour": 1})
    with pytest.raises(UserError, match="method"):
        EstimatorConfig.from_dict({"bits": 8})


def test_registry() -> None:
    assert set(ESTIMATORS) == {"max", "percentile", "mse", "entropy"}
    h = hist_of(np.array([0.5, -2.0, 1.0]))
    assert estimate_amax(h, EstimatorConfig("max")) == 2.0


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_every_estimator_returns_positive_amax_at_most_absmax(method: str) -> None:
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(20000), np.zeros(10), np.array([0.0] * 999 + [1e-3]), np.array([5.0])):
        amax = estimate_amax(hist_of(x), EstimatorConfig(method))
        assert isinstance(amax, float) and amax > 0.0
        if np.abs(x).max() > 0:
            assert amax <= np.abs(x).max()
        else:
            assert amax == ZERO_TENSOR_AMAX


# -------------------------------------------------------------------------------------------------- max / pct


def test_max_is_exact() -> None:
    x = np.random.default_rng(1).standard_normal(1001) * 3.3
    assert amax_max(hist_of(x), EstimatorConfig("max")) == np.abs(x).max()


@pytest.mark.parametrize("pct", [90.0, 99.0, 99.9, 99.99])
@pytest.mark.parametrize("dist", ["normal", "laplace", "relu"])
def test_percentile_within_one_bin_of_numpy(pct: float, dist: str) -> None:
    rng = np.random.default_rng(2)
    x = {
        "normal": rng.standard_normal(200_000),
        "laplace": rng.laplace(size=200_000) * 0.2,
        "relu": np.maximum(rng.standard_normal(200_000) - 0.5, 0.0),  # a spike of exact zeros
    }[dist]
    h = hist_of(x)
    got = amax_percentile(h, EstimatorConfig("percentile", percentile=pct))
    assert abs(got - np.percentile(np.abs(x), pct)) <= h.bin_width


def test_percentile_100_is_absmax() -> None:
    x = np.random.default_rng(3).standard_normal(5000)
    assert amax_percentile(hist_of(x), EstimatorConfig("percentile", percentile=100.0)) == np.abs(x).max()


# --------------------------------------------------------------------------------------------------------- mse


@pytest.mark.parametrize(("bits", "p"), [(8, 2.0), (4, 2.0), (8, 2.4), (4, 2.4)])
def test_expected_error_model_matches_samples(bits: int, p: float) -> None:
    x = np.random.default_rng(4).standard_normal(100_000)
    h = hist_of(x)
    candidates = np.abs(x).max() * np.array([0.2, 0.4, 0.55, 0.7, 0.85, 1.0])
    model = expected_errors(h, candidates, bits, p)
    brute = sample_errors(x, candidates, bits, p)
    np.testing.assert_allclose(model, brute, rtol=0.03)


@pytest.mark.parametrize("dist", ["normal", "laplace"])
@pytest.mark.parametrize(("bits", "p"), [(8, 2.0), (4, 2.0), (8, 2.4), (4, 2.4)])
def test_mse_matches_brute_force_search_on_samples(dist: str, bits: int, p: float) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal(100_000) if dist == "normal" else rng.laplace(size=100_000)
    config = EstimatorConfig("mse", bits=bits, p=p, mse_candidates=100)
    got = amax_mse(hist_of(x), config)
    grid = np.abs(x).max() * np.arange(1, 101) / 100
    brute = sample_errors(x, grid, bits, p)
    best = grid[np.argmin(brute)]
    err_got = sample_errors(x, np.array([got]), bits, p)[0]
    assert err_got <= brute.min() * 1.01  # as good as the best clip found on the raw samples
    assert abs(got - best) <= 3 * (grid[1] - grid[0])
    assert got < np.abs(x).max()  # it does clip


@pytest.mark.parametrize(("bits", "alpha_star"), [(8, 3.92), (4, 2.47)])
def test_mse_gaussian_against_closed_form(bits: int, alpha_star: float) -> None:
    alphas = np.arange(1.5, 5.5, 0.005)
    exact = gaussian_mse(alphas, qmax_for(bits))
    assert abs(alphas[np.argmin(exact)] - alpha_star) < 0.02  # the known optimum (ACIQ), recomputed here
    x = np.random.default_rng(6).standard_normal(400_000)
    got = amax_mse(hist_of(x), EstimatorConfig("mse", bits=bits))
    assert gaussian_mse(np.array([got]), qmax_for(bits))[0] <= exact.min() * 1.03
    assert abs(got - alpha_star) < 0.3


def test_mse_larger_p_clips_less_on_laplace() -> None:
    x = np.random.default_rng(7).laplace(size=100_000)
    h = hist_of(x)
    a2 = amax_mse(h, EstimatorConfig("mse", bits=4, p=2.0))
    a4 = amax_mse(h, EstimatorConfig("mse", bits=4, p=4.0))
    assert a4 > a2  # a larger exponent punishes the large clipping errors more


# ----------------------------------------------------------------------------------------------------- entropy


def reference_divergences(counts: np.ndarray, bits: int, start_bin: int) -> tuple[list[int], list[float]]:
    """A plain loop over candidates, written from TensorRT's description (pytorch-quantization's algorithm)."""
    last_nonzero = int(np.flatnonzero(counts)[-1])
    bins = counts[: last_nonzero + 1].astype(np.float64).copy()
    bins[0] = bins[1]
    levels = 1 << (bits - 1)
    candidates, divs = [], []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        level_of = np.digitize(np.arange(i), space) - 1
        level_of[bins[:i] == 0] = -1
        level_sum = np.zeros(levels)
        for j, lv in enumerate(level_of):
            if lv != -1:
                level_sum[lv] += bins[j]
        members = Counter(int(v) for v in level_of if v != -1)
        q = np.array([level_sum[lv] / members[int(lv)] if lv != -1 else 0.0 for lv in level_of])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        candidates.append(i)
        divs.append(float(entropy(p, q)))
    return candidates, divs


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("case", ["normal", "laplace_sparse", "gappy"])
def test_entropy_divergences_match_loop_reference(bits: int, case: str) -> None:
    rng = np.random.default_rng(8)
    num_bins = 512
    if case == "normal":
        counts = np.histogram(np.abs(rng.standard_normal(50_000)), num_bins, (0, 8))[0]
    elif case == "laplace_sparse":
        counts = np.histogram(np.abs(rng.laplace(size=3_000)), num_bins, (0, 16))[0]
    else:
        counts = rng.integers(0, 50, num_bins) * (rng.random(num_bins) < 0.3)
        counts[300] = 7
    candidates, divs = reference_divergences(counts, bits, 128)
    i, kl = entropy_divergences(counts, bits, 128)
    assert i.tolist() == candidates
    ref = np.asarray(divs)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(kl), finite)
    np.testing.assert_allclose(kl[finite], ref[finite], rtol=1e-9, atol=1e-12)


def test_entropy_picks_the_reference_clip() -> None:
    x = np.random.default_rng(9).laplace(size=50_000)
    h = hist_of(x, 512)
    candidates, divs = reference_divergences(h.counts, 8, 128)
    best = candidates[len(divs) - 1 - int(np.argmin(divs[::-1]))]  # last argmin, as TensorRT
    assert amax_entropy(h, EstimatorConfig("entropy")) == min(best * h.bin_width, h.absmax)


def test_entropy_clips_heavy_tails_but_not_uniform_data() -> None:
    rng = np.random.default_rng(10)
    heavy = rng.standard_t(df=2, size=200_000)
    h = hist_of(heavy)
    assert amax_entropy(h, EstimatorConfig("entropy")) < 0.5 * h.absmax
    uniform = rng.uniform(-3.0, 3.0, size=200_000)
    hu = hist_of(uniform)
    assert amax_entropy(hu, EstimatorConfig("entropy")) >= 0.97 * hu.absmax


def test_entropy_with_too_few_bins_keeps_absmax() -> None:
    h = hist_of(np.array([0.0, 1.0, 1.5, 1.99]))
    h.ensure_range(256.0)  # bin width 0.125: the data spans 16 bins, fewer than the 128 levels
    assert amax_entropy(h, EstimatorConfig("entropy")) == 1.99
