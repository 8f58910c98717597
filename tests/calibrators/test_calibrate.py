"""``python -m tools calibrate``: ranges.json on a real exported UNet, determinism, cache, mismatch, interruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import TensorRanges
from tests.conftest import run_cli

ARGS = ["--method", "ndtc", "--samples", "8", "--steps", "8", "--seed", "3"]


@pytest.fixture()
def work(tiny_work: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_work, dest, ignore=shutil.ignore_patterns("calib", "ranges.json", "*.int8.*"))
    return dest


def test_ranges_cover_every_quantizable_tensor_and_are_deterministic(work: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("calibrate", work, *ARGS) == 0
    first = (work / "ranges.json").read_bytes()
    ranges = TensorRanges.load(work / "ranges.json")
    info = json.loads((work / "export.json").read_text())
    assert ranges.model_sha256 == info["onnx"]["sha256"]
    assert ranges.settings.method == "ndtc" and ranges.settings.seed == 3
    assert any("/split0" in name for name in ranges.amax)  # branch outputs of the split shortcut convs
    assert len(ranges.group_bounds) >= 2 and set(ranges.group_amax) == set(ranges.amax)
    capsys.readouterr()
    # same settings: samples come from the cache, and the file is byte-identical
    assert run_cli("calibrate", work, *ARGS) == 0
    assert "reusing" in capsys.readouterr().out
    assert (work / "ranges.json").read_bytes() == first
    # without the cache too
    shutil.rmtree(work / "calib")
    assert run_cli("calibrate", work, *ARGS) == 0
    assert (work / "ranges.json").read_bytes() == first
    # another seed gives other ranges
    assert run_cli("calibrate", work, *ARGS[:-1], "4") == 0
    assert (work / "ranges.json").read_bytes() != first


@pytest.mark.parametrize("estimator", ["percentile", "mse", "entropy"])
def test_every_estimator_runs(work: Path, estimator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tensor's amax is the chosen estimator (calibrators/estimators.py, tested against closed forms) on the
    histogram of all steps of the statistics calibrate collected; at most the tensor's abs-max, below it for some."""
    import calibrators.calibrate as cal
    from calibrators.estimators import ESTIMATORS
    from calibrators.settings import EstimatorConfig

    collected: list[Any] = []

    def spy(stats: Any, *args: Any, **kwargs: Any) -> TensorRanges:
        collected.append(stats)
        return ranges_from_stats(stats, *args, **kwargs)

    monkeypatch.setattr(cal, "ranges_from_stats", spy)
    assert run_cli("calibrate", work, *ARGS, "--estimator", estimator, "--aggregation", "global") == 0
    ranges = TensorRanges.load(work / "ranges.json")
    assert ranges.settings.estimator.method == estimator and not ranges.group_bounds
    [stats] = collected
    config = EstimatorConfig(method=estimator)
    absmax = {name: float(stats[name].global_histogram().absmax) for name in stats.names}
    assert sorted(ranges.amax) == sorted(stats.names)
    for name in stats.names:
        assert ranges.amax[name] == ESTIMATORS[estimator](stats[name].global_histogram(), config)
        assert 0 < ranges.amax[name] <= absmax[name] or ranges.amax[name] == absmax[name] == 0
    assert sum(ranges.amax[n] < absmax[n] for n in stats.names) >= len(absmax) // 2


def test_ranges_of_another_model_are_refused(work: Path, tiny_cond_work: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("calibrate", work, *ARGS) == 0
    other = json.loads((tiny_cond_work / "export.json").read_text())["onnx"]["sha256"]
    with pytest.raises(Exception, match="ranges.json"):
        TensorRanges.load(work / "ranges.json", expected_model_sha256=other)
    shutil.copy(work / "ranges.json", tiny_cond_work / "foreign.json")
    assert run_cli("quantize", tiny_cond_work, "--ranges", tiny_cond_work / "foreign.json") == 2
    assert "foreign.json" in capsys.readouterr().err
    (tiny_cond_work / "foreign.json").unlink()


def test_interrupted_run_leaves_previous_ranges(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli("calibrate", work, *ARGS) == 0
    before = (work / "ranges.json").read_bytes()
    import calibrators.calibrate as cal

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cal, "ranges_from_stats", boom)
    with pytest.raises(KeyboardInterrupt):
        run_cli("calibrate", work, *ARGS[:-1], "9")
    assert (work / "ranges.json").read_bytes() == before
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_conditional_model_calibrates_with_guidance_pairs(tiny_cond_work: Path, tmp_path: Path) -> None:
    dest = tmp_path / "c"
    shutil.copytree(tiny_cond_work, dest)
    assert run_cli("calibrate", dest, "--method", "uniform", "--samples", "4", "--steps", "4", "--every", "2",
                   "--groups", "2") == 0
    cached = next((dest / "calib").iterdir())
    import numpy as np

    x, cond = np.load(cached / "x.npy"), np.load(cached / "cond.npy")
    assert x.shape == (4, 2, 4, 8, 8) and cond.shape == (4, 2, 5, 12)
    np.testing.assert_array_equal(cond[:, 0], 0)  # the unconditional half of each pair
    np.testing.assert_array_equal(x[:, 0], x[:, 1])


def test_tap_budget_splits_passes_and_changes_nothing(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny tap budget forces many passes over the samples; the ranges are byte-identical to one pass."""
    assert run_cli("calibrate", work, *ARGS) == 0
    one_pass = (work / "ranges.json").read_bytes()
    capsys.readouterr()
    assert run_cli("calibrate", work, *ARGS, "--tap-budget-gb", "0.0001") == 0
    assert "pass(es)" in capsys.readouterr().err
    assert (work / "ranges.json").read_bytes() == one_pass


def test_tap_groups_respect_the_budget(tiny_work: Path) -> None:
    import onnx

    from calibrators.calibrate import tap_groups
    from quantization.qdq_rules import calibration_tensors

    model = onnx.load(str(tiny_work / "model.onnx"))
    tensors = calibration_tensors(model)
    assert tap_groups(model, tensors, 4, 2**30) == [tensors]
    budget = 16 * 16 * 16 * 4 * 4  # one 16-channel 16x16 float map for 4 rows
    groups = tap_groups(model, tensors, 4, budget)
    assert len(groups) > 3 and sum(groups, []) == tensors
    assert max(len(g) for g in groups) < len(tensors) / 3


def test_sdxl_samples_carry_added_conditions_that_reach_the_graph(tiny_sdxl_work: Path, tmp_path: Path) -> None:
    """On an SDXL-structured folder, calibration samples carry text_embeds (pooled, from the second encoder) and
    time_ids (from the image size) beside encoder_hidden_states, and the statistics see them: the add-embedding's
    tensors change when either is zeroed, while the time embedding (timestep only) does not."""
    from dataclasses import replace

    import numpy as np
    import onnx

    from calibrators.aggregation import AggregationConfig
    from calibrators.calibrate import CalibrateConfig, collect, generate_samples
    from calibrators.estimators import EstimatorConfig
    from calibrators.sources import SourceConfig
    from common.hashing import onnx_model_sha256
    from common.workdir import WorkDir
    from pipelines.conditioning_inputs import ConditioningInputs, resolve_conditioning
    from quantization.qdq_rules import calibration_tensors

    work = tmp_path / "xl"
    shutil.copytree(tiny_sdxl_work, work, ignore=shutil.ignore_patterns("calib", "ranges.json", "*.int8.*"))
    info = WorkDir(work).load_export_info()
    cond = resolve_conditioning(work, info, ConditioningInputs(prompts=("a photo of 3", "digit seven"),
                                                               guidance_scale=2.0))
    assert cond is not None and sorted(cond.added) == ["text_embeds", "time_ids"]
    cfg = CalibrateConfig(SourceConfig(method="uniform", samples=4, steps=4, guidance_scale=2.0),
                          EstimatorConfig(method="max"), AggregationConfig(method="global"))
    samples = generate_samples(WorkDir(work), info, cfg, onnx_model_sha256(work / "model.onnx"), cond, progress=False)
    assert len(samples) == 4
    for s in samples:  # (unconditional, conditional) rows, as the runner feeds them
        assert s.x.shape == (2, 4, 8, 8) and s.cond is not None and s.cond.shape == (2, 24, 32)
        assert s.added["text_embeds"].shape == (2, 16) and s.added["time_ids"].shape == (2, 6)
        np.testing.assert_array_equal(s.added["time_ids"], [[16, 16, 0, 0, 16, 16]] * 2)
        assert not s.added["text_embeds"][0].any() and s.added["text_embeds"][1].any()  # force_zeros_for_empty_prompt
    model = onnx.load(str(work / "model.onnx"))
    names = [n for n in calibration_tensors(model, False) if "/add_embedding/" in n or "/time_embedding/" in n]
    assert any("/add_embedding/" in n for n in names) and any("/time_embedding/" in n for n in names)
    real = collect(model, work, samples, names, cfg, progress=False)
    for zeroed in ("text_embeds", "time_ids"):
        other = collect(model, work, [replace(s, added={**s.added, zeroed: np.zeros_like(s.added[zeroed])})
                                      for s in samples], names, cfg, progress=False)
        for name in names:
            same = np.array_equal(real[name].absmax, other[name].absmax)
            assert same == ("/time_embedding/" in name), (zeroed, name)
