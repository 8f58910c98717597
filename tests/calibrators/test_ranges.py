"""TensorRanges: exact JSON round trip, byte-identical files, clear errors for wrong model or corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibrators.aggregation import AggregationConfig
from calibrators.collectors import StatsCollector, TensorStats
from calibrators.estimators import EstimatorConfig
from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import SCHEMA_VERSION, CalibrationSettings, StepSummary, TensorRanges
from common.errors import UserError

SHA = "0123456789abcdef" * 4
OTHER_SHA = "f" * 64


def collect(seed: int) -> TensorStats:
    rng = np.random.default_rng(seed)
    c = StatsCollector(512)
    for _ in range(2):
        for t in (999, 750, 500, 250, 1):
            c.update("down_blocks.0.resnets.0.conv1.input", rng.standard_normal((2, 4, 6, 6)) * (1 + t / 200), t)
            c.update("mid_block.attentions.0.to_q.input", rng.laplace(size=(2, 16, 8)) / 3, t)
    return c.finalize()


def make_ranges(seed: int = 0, aggregation: AggregationConfig | None = None) -> TensorRanges:
    return ranges_from_stats(
        collect(seed),
        EstimatorConfig("mse", p=2.4),
        aggregation or AggregationConfig("groups", groups=2),
        model_sha256=SHA,
        calibration="ndtc",
        calibration_params={"samples": 64, "mu": 400.0, "sigma": 250.5, "steps": 50, "scheduler": "ddim"},
        seed=seed,
    )


def test_ranges_from_stats_contents() -> None:
    r = make_ranges()
    assert r.schema_version == SCHEMA_VERSION == 1
    assert sorted(r.amax) == ["down_blocks.0.resnets.0.conv1.input", "mid_block.attentions.0.to_q.input"]
    assert r.group_bounds == [(1, 749), (750, 999)]  # 5 steps: {1, 250, 500} and {750, 999}
    for name in sorted(r.amax):
        assert len(r.group_amax[name]) == 2 and all(a > 0 for a in r.group_amax[name])
        assert r.step_summary[name].steps == [1, 250, 500, 750, 999]
    conv = "down_blocks.0.resnets.0.conv1.input"
    assert r.group_amax[conv][0] < r.group_amax[conv][1]  # small t have a smaller range in this data
    assert r.amax_at(conv, 0) == r.group_amax[conv][0] and r.amax_at(conv, 999) == r.group_amax[conv][1]
    assert r.settings.estimator.p == 2.4 and r.settings.num_bins == 512 and r.settings.seed == 0


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    r = make_ranges()
    back = TensorRanges.from_json(r.to_json())
    assert back == r
    for name in sorted(r.amax):  # exact floats, not approximately equal ones
        assert back.amax[name] == r.amax[name]
        assert back.group_amax[name] == r.group_amax[name]
    path = tmp_path / "ranges.json"
    r.save(path)
    assert path.read_bytes() == r.to_json().encode()
    loaded = TensorRanges.load(path, expected_model_sha256=SHA)
    assert loaded == r
    second = tmp_path / "again.json"
    loaded.save(second)
    assert second.read_bytes() == path.read_bytes()


def test_awkward_floats_survive(tmp_path: Path) -> None:
    values = {"a": 0.1 + 0.2, "b": 1 / 3, "c": 5e-324, "d": 1.7976931348623157e308, "e": 2.0**-30 * 3}
    r = TensorRanges(model_sha256=SHA, settings=make_ranges().settings, amax=values)
    back = TensorRanges.from_json(r.to_json())
    assert back.amax == values
    assert [back.amax[k].hex() for k in values] == [v.hex() for v in values.values()]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    make_ranges(seed=3).save(tmp_path / "a.json")
    make_ranges(seed=3).save(tmp_path / "b.json")
    make_ranges(seed=4).save(tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()


def test_insertion_order_does_not_change_bytes() -> None:
    r = make_ranges(aggregation=AggregationConfig())
    reordered = TensorRanges(
        model_sha256=r.model_sha256,
        settings=r.settings,
        amax=dict(reversed(list(r.amax.items()))),
        step_summary=dict(reversed(list(r.step_summary.items()))),
    )
    assert reordered.to_json() == r.to_json()


def test_min_mean_needs_max_estimator() -> None:
    with pytest.raises(UserError, match="min-mean"):
        ranges_from_stats(
            collect(0),
            EstimatorConfig("percentile"),
            AggregationConfig("min-mean"),
            model_sha256=SHA,
            calibration="uniform",
            calibration_params={},
            seed=0,
        )
    r = ranges_from_stats(
        collect(0),
        EstimatorConfig("max"),
        AggregationConfig("min-mean"),
        model_sha256=SHA,
        calibration="uniform",
        calibration_params={},
        seed=0,
    )
    assert r.group_bounds == [] and r.group_amax == {}
    for name in sorted(r.amax):  # the min over steps of a mean is below the overall abs-max
        assert 0 < r.amax[name] < max(r.step_summary[name].absmax)


def test_model_mismatch_is_a_user_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ranges.json"
    make_ranges().save(path)
    with pytest.raises(UserError, match="ranges.json.*calibrated for model sha256 0123456789abcdef") as info:
        TensorRanges.load(path, expected_model_sha256=OTHER_SHA)
    assert "\n" not in str(info.value)
    assert TensorRanges.load(path, expected_model_sha256=SHA.upper()).model_sha256 == SHA
    assert TensorRanges.load(path).model_sha256 == SHA


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "text",
    ['{"schema_version": 1, "amax": {"a": 1.0', "", "not json", '{"a": }'],
)
def test_corrupt_json_is_a_one_line_user_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=r"ranges\.json: corrupt ranges file") as info:
        TensorRanges.load(path)
    assert "\n" not in str(info.value)


def test_non_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ranges.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="ranges.json: corrupt"):
        TensorRanges.load(path)
    with pytest.raises(UserError, match="missing.json: cannot read"):
        TensorRanges.load(tmp_path / "missing.json")


def test_unknown_schema_version(tmp_path: Path) -> None:
    data = make_ranges().to_dict()
    data["schema_version"] = 2
    with pytest.raises(UserError, match=r"ranges\.json: ranges schema version 2 is unknown"):
        TensorRanges.load(write(tmp_path, data))
    del data["schema_version"]
    with pytest.raises(UserError, match="schema_version"):
        TensorRanges.load(write(tmp_path, data))
    with pytest.raises(UserError, match="ranges.json"):
        TensorRanges.load(write(tmp_path, [1, 2]))


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "0.0", "-1.5", '"3"', "true"])
def test_bad_amax_names_the_tensor(tmp_path: Path, bad: str) -> None:
    text = make_ranges().to_json()
    name = "mid_block.attentions.0.to_q.input"
    data = json.loads(text)
    data["amax"][name] = "__BAD__"
    path = write(tmp_path, json.dumps(data).replace('"__BAD__"', bad))
    with pytest.raises(UserError, match=rf"ranges\.json: .*tensor '{name}'"):
        TensorRanges.load(path)


def test_bad_group_amax_names_the_tensor(tmp_path: Path) -> None:
    data = make_ranges().to_dict()
    name = "down_blocks.0.resnets.0.conv1.input"
    data["group_amax"][name] = [1.0]
    with pytest.raises(UserError, match=rf"tensor '{name}' has 1 values for 2 groups"):
        TensorRanges.load(write(tmp_path, data))
    data["group_amax"][name] = [1.0, 0.0]
    with pytest.raises(UserError, match=rf"group 1 amax of tensor '{name}'"):
        TensorRanges.load(write(tmp_path, data))


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d.pop("amax"), "amax"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(model_sha256="xyz"), "model_sha256"),
        (lambda d: d["settings"]["estimator"].update(bits=5), "bits"),
        (lambda d: d["settings"]["aggregation"].update(groups=0), "groups"),
        (lambda d: d["settings"].pop("seed"), "seed"),
        (lambda d: d["settings"].update(seed=1.5), "seed"),
        (lambda d: d.update(group_bounds=[[750, 999], [1, 749]]), "group_bounds"),
        (lambda d: d["step_summary"]["mid_block.attentions.0.to_q.input"].update(absmax=[1.0]), "step_summary"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    data = make_ranges().to_dict()
    edit(data)
    with pytest.raises(UserError, match=rf"ranges\.json: .*{needle}") as info:
        TensorRanges.load(write(tmp_path, data))
    assert "\n" not in str(info.value)


def test_settings_params_must_be_plain_json() -> None:
    base = make_ranges().settings
    with pytest.raises(UserError, match="settings.params.bad"):
        CalibrationSettings(
            method="ndtc", params={"bad": object()}, estimator=base.estimator, aggregation=base.aggregation,
            seed=0, num_bins=512,
        )
    s = CalibrationSettings(
        method="ndtc", params={"shape": (1, 2), "w": np.float32(0.5)}, estimator=base.estimator,
        aggregation=base.aggregation, seed=np.int64(7), num_bins=512,  # type: ignore[arg-type]
    )
    assert s.params == {"shape": [1, 2], "w": 0.5} and s.seed == 7 and type(s.seed) is int


def test_step_summary_validation() -> None:
    with pytest.raises(UserError, match="ascending"):
        StepSummary(steps=[5, 1], absmax=[1.0, 2.0])
