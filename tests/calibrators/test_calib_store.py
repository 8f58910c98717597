"""The ``calib/`` cache: samples with every conditioning input round-trip (format 2); version-1 folders (before
added conditions) still load; unknown versions and damaged folders are regenerated, never misread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibrators.calib_store import FORMAT_VERSION, STORE_FILE, cached_folder, find_cached, load_cached, save_samples
from calibrators.graph_taps import sample_feeds
from calibrators.sample import CalibSample

SETTINGS = {"model_sha256": "ab" * 32, "source": {"method": "uniform", "samples": 3}, "cond_sha": "k"}


def _sdxl_samples(n: int = 3) -> list[CalibSample]:
    """(unconditional, conditional) pairs as a guided SDXL UNet sees them: 2 rows per sample."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ids = np.tile(np.array([[16, 16, 0, 0, 16, 16]], np.float32), (2, 1))
        out.append(CalibSample(rng.standard_normal((2, 4, 8, 8)).astype(np.float32), 999 - 333 * i, i,
                               rng.standard_normal((2, 24, 32)).astype(np.float32),
                               {"text_embeds": rng.standard_normal((2, 16)).astype(np.float32), "time_ids": ids}))
    return out


def test_added_conditions_round_trip_and_reach_the_feeds(tmp_path: Path) -> None:
    samples = _sdxl_samples()
    save_samples(tmp_path, SETTINGS, samples)
    folder = cached_folder(tmp_path, SETTINGS)
    assert json.loads((folder / STORE_FILE).read_text()) == {"format_version": FORMAT_VERSION,
                                                            "added": ["text_embeds", "time_ids"]}
    assert np.load(folder / "added.text_embeds.npy").shape == (3, 2, 16)
    assert np.load(folder / "added.time_ids.npy").shape == (3, 2, 6)
    loaded = load_cached(tmp_path, SETTINGS)
    assert loaded is not None and len(loaded) == 3
    for a, b in zip(samples, loaded, strict=True):
        assert (a.t, a.step) == (b.t, b.step)
        fa, fb = sample_feeds(a), sample_feeds(b)
        assert sorted(fb) == ["encoder_hidden_states", "sample", "text_embeds", "time_ids", "timestep"]
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k])
    assert find_cached(tmp_path, SETTINGS["model_sha256"], SETTINGS["source"]) is not None


def test_version_1_folder_still_loads(tmp_path: Path) -> None:
    """A folder as written before format 2 (no store.json, no added conditions) loads unchanged."""
    folder = cached_folder(tmp_path, SETTINGS)
    folder.mkdir(parents=True)
    x = np.arange(2 * 2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 2, 1, 2, 2)
    cond = np.ones((2, 2, 5, 12), np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "t.npy", np.array([900, 10], np.int64))
    np.save(folder / "step.npy", np.array([0, 9], np.int64))
    np.save(folder / "cond.npy", cond)
    (folder / "settings.json").write_text(json.dumps(SETTINGS))
    loaded = load_cached(tmp_path, SETTINGS)
    assert loaded is not None and [s.t for s in loaded] == [900, 10] and [s.step for s in loaded] == [0, 9]
    assert all(not s.added for s in loaded)
    np.testing.assert_array_equal(loaded[1].x, x[1])
    assert sorted(sample_feeds(loaded[0])) == ["encoder_hidden_states", "sample", "timestep"]


@pytest.mark.parametrize("damage", ["newer_version", "missing_added_file", "rows_disagree", "bad_name"])
def test_unknown_or_damaged_store_is_not_trusted(tmp_path: Path, damage: str) -> None:
    save_samples(tmp_path, SETTINGS, _sdxl_samples())
    folder = cached_folder(tmp_path, SETTINGS)
    store = json.loads((folder / STORE_FILE).read_text())
    if damage == "newer_version":
        store["format_version"] = FORMAT_VERSION + 1
    elif damage == "missing_added_file":
        (folder / "added.time_ids.npy").unlink()
    elif damage == "rows_disagree":
        np.save(folder / "added.text_embeds.npy", np.zeros((3, 1, 16), np.float32))  # 1 row where x has 2
    else:
        store["added"] = ["../x"]
    (folder / STORE_FILE).write_text(json.dumps(store))
    assert load_cached(tmp_path, SETTINGS) is None


def test_samples_must_carry_the_same_inputs(tmp_path: Path) -> None:
    a, b, _ = _sdxl_samples()
    with pytest.raises(ValueError, match="different conditioning inputs"):
        save_samples(tmp_path, SETTINGS, [a, CalibSample(b.x, b.t, b.step, b.cond)])
    assert not (tmp_path / cached_folder(tmp_path, SETTINGS).name).exists()
