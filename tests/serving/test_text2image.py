"""The text-to-image binding without Triton, on the tiny SD pipeline: a request equals ``sample --prompt --seed
--num 1``; a batch mixing prompts, negative prompts, steps and guidance scales (grouped per (steps, guidance)) gives
every request the image it gets alone; a bad value names the field and the request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.workdir import WorkDir
from serving.config import ServeConfig
from serving.fields import RequestError
from serving.text2image import TextToImageBinding
from tests.conftest import run_cli


def t2i_request(prompt: str, seeds: list[int], steps: int | None = None, guidance: float | None = None,
                negative: str | None = None) -> dict[str, np.ndarray]:
    """A request of ``len(seeds)`` rows as Triton hands it to the infer function (BYTES as object arrays)."""
    n = len(seeds)
    req = {"prompt": np.array([[prompt.encode()]] * n, dtype=np.object_),
           "seed": np.array(seeds, dtype=np.int64).reshape(n, 1)}
    if steps is not None:
        req["steps"] = np.full((n, 1), steps, dtype=np.int32)
    if guidance is not None:
        req["guidance_scale"] = np.full((n, 1), guidance, dtype=np.float32)
    if negative is not None:
        req["negative_prompt"] = np.array([[negative.encode()]] * n, dtype=np.object_)
    return req


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return float("inf") if mse == 0.0 else 10 * np.log10(1.0 / mse)


def sample_png(work: Path, out: Path, prompt: str, seed: int, steps: int, guidance: float,
               negative: str | None = None) -> np.ndarray:
    """``python -m tools sample WORK --prompt P --seed S --num 1`` -> its one image, H×W×3 uint8 (grid pad 2)."""
    extra = [] if negative is None else ["--negative-prompt", negative]
    assert run_cli("sample", work, "--prompt", prompt, "--seed", seed, "--num", 1, "--steps", steps,
                   "--guidance-scale", guidance, "--out", out, *extra) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    h, w = grid.shape[0] - 4, grid.shape[1] - 4
    return grid[2 : 2 + h, 2 : 2 + w]


def test_requests_equal_sample_alone_and_mixed_in_one_batch(tiny_sd_work: Path, tmp_path: Path) -> None:
    binding = TextToImageBinding(ServeConfig(work=tiny_sd_work, steps=3, max_batch=4, guidance_scale=5.0),
                                 WorkDir(tiny_sd_work).load_export_info())
    infer = binding.open_instance()
    try:
        batch = [t2i_request("a photo of 3", [4, 5]), t2i_request("digit seven", [4], negative="blurry"),
                 t2i_request("a photo of 3", [4], steps=2), t2i_request("digit seven", [6], guidance=1.0)]
        together = infer(batch)
        alone = [infer([r])[0]["image"] for r in batch]
    finally:
        binding.close()
    assert [o["image"].shape for o in together] == [(2, 16, 16, 3), (1, 16, 16, 3), (1, 16, 16, 3), (1, 16, 16, 3)]
    assert all(o["image"].dtype == np.uint8 for o in together)
    for got, want in zip(together, alone, strict=True):
        assert psnr(got["image"], want) >= 60.0
    cases = [(together[0]["image"][1], "a photo of 3", 5, 3, 5.0, None),
             (together[1]["image"][0], "digit seven", 4, 3, 5.0, "blurry"),
             (together[2]["image"][0], "a photo of 3", 4, 2, 5.0, None),
             (together[3]["image"][0], "digit seven", 6, 3, 1.0, None)]
    for i, (got, prompt, seed, steps, guidance, negative) in enumerate(cases):
        want = sample_png(tiny_sd_work, tmp_path / f"s{i}.png", prompt, seed, steps, guidance, negative)
        assert psnr(got, want) >= 60.0, i
    assert psnr(together[0]["image"][0], together[2]["image"][0]) < 60.0  # same prompt and seed, 3 vs 2 steps


def test_a_bad_value_names_the_field_and_the_request(tiny_sd_work: Path) -> None:
    binding = TextToImageBinding(ServeConfig(work=tiny_sd_work, steps=2, max_steps=10),
                                 WorkDir(tiny_sd_work).load_export_info())
    infer = binding.open_instance()
    try:
        with pytest.raises(RequestError, match=r"^prompt: empty \(request 2 of 2 in this batch\)"):
            infer([t2i_request("a photo of 3", [1]), t2i_request("  ", [2])])
        with pytest.raises(RequestError, match=r"^guidance_scale: nan is out of range"):
            infer([t2i_request("a photo of 3", [1], guidance=float("nan"))])
        with pytest.raises(RequestError, match=r"^steps: 11 is out of range 1\.\.10"):
            infer([t2i_request("a photo of 3", [1], steps=11)])
        assert infer([t2i_request("a photo of 3", [1], negative="")])[0]["image"].shape == (1, 16, 16, 3)
    finally:
        binding.close()


def test_sdxl_pooled_conditions_and_zero_negatives_mixed_in_one_batch(tiny_sdxl_work: Path, tmp_path: Path) -> None:
    """SDXL: pooled text embeddings and size ids per row; a request without a negative prompt (zeros, as
    ``force_zeros_for_empty_prompt`` says) shares the UNet batch with one that sends one."""
    binding = TextToImageBinding(ServeConfig(work=tiny_sdxl_work, steps=2, max_batch=4, guidance_scale=5.0),
                                 WorkDir(tiny_sdxl_work).load_export_info())
    infer = binding.open_instance()
    try:
        batch = [t2i_request("a photo of 3", [4]), t2i_request("digit seven", [4], negative="blurry")]
        together = infer(batch)
        alone = [infer([r])[0]["image"] for r in batch]
    finally:
        binding.close()
    for got, want in zip(together, alone, strict=True):
        assert psnr(got["image"], want) >= 60.0
    h, w = together[0]["image"].shape[1:3]
    want = sample_png(tiny_sdxl_work, tmp_path / "x.png", "digit seven", 4, 2, 5.0, "blurry")
    assert want.shape == (h, w, 3) and psnr(together[1]["image"][0], want) >= 60.0
