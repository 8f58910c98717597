"""Lockstep sampling: each image equals the runner's sample of that seed alone, stochastic schedulers included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.lockstep import sample_lockstep, to_uint8_hwc
from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner, initial_noise
from pipelines.schedulers import make_scheduler


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpm"])
def test_lockstep_image_equals_the_seed_sampled_alone(tiny_work: Path, name: str) -> None:
    config = json.loads((tiny_work / "export.json").read_text())["scheduler"]
    seeds, steps, shape = [3, 11, 3], 6, (1, 16, 16)
    with OrtSession(tiny_work / "model.onnx") as s:
        together = sample_lockstep(s, lambda: make_scheduler(name, config), shape, seeds, steps, batch_size=2)
        alone = [DenoiseRunner(s, make_scheduler(name, config)).sample(initial_noise((1, *shape), k), steps, seed=k)
                 for k in seeds]
    assert together.shape == (3, *shape)
    np.testing.assert_allclose(together, np.concatenate(alone), atol=1e-5)
    np.testing.assert_array_equal(together[0], together[2])  # same seed, same image
    assert not np.allclose(together[0], together[1])


def test_lockstep_rejects_no_seeds(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as s, pytest.raises(ValueError, match="at least one seed"):
        sample_lockstep(s, lambda: make_scheduler("ddim", {}), (1, 16, 16), [], 5)


def test_to_uint8_hwc_rounds_like_the_png_grid() -> None:
    from common.images import grid_uint8

    images = np.random.default_rng(0).random((1, 1, 4, 4)).astype(np.float32)
    assert to_uint8_hwc(images).shape == (1, 4, 4, 1)
    np.testing.assert_array_equal(to_uint8_hwc(images)[0, :, :, 0], grid_uint8(images, pad=0))


def test_lockstep_refuses_a_flag_the_scheduler_does_not_take(tiny_work: Path) -> None:
    """--use-clipped-model-output with a scheduler whose step has no such argument: refused, not dropped."""
    from common.errors import UserError

    config = json.loads((tiny_work / "export.json").read_text())["scheduler"]
    with OrtSession(tiny_work / "model.onnx") as s, pytest.raises(
            UserError, match=r"^--use-clipped-model-output: EulerDiscreteScheduler\.step does not take it"):
        sample_lockstep(s, lambda: make_scheduler("euler", config), (1, 16, 16), [1], 2,
                        use_clipped_model_output=True)
