"""The denoising runner against diffusers' own pipelines (code no one here wrote) and a guided loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.ort_session import OrtSession
from pipelines.conditioning import Conditioning
from pipelines.runner import DenoiseRunner, to_images
from pipelines.schedulers import SCHEDULERS, make_scheduler
from tests.conftest import REFERENCE_MODEL, TINY_COND_LEN


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("pipeline_name, sched_name", [("DDIMPipeline", "ddim"), ("DDPMPipeline", "ddpm")])
def test_reference_model_matches_diffusers_pipeline(reference_work: Path, pipeline_name: str, sched_name: str) -> None:
    """Same seed -> same x_T; 50 steps; PSNR >= 60 dB over 8 images after the pipelines' post-processing."""
    import diffusers

    pipe = getattr(diffusers, pipeline_name).from_pretrained(REFERENCE_MODEL, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    seed, n, steps = 3, 8, 50
    ref = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
               output_type="np").images  # N×H×W×C in [0, 1]
    info_sched = dict(pipe.scheduler.config)
    with OrtSession(reference_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler(sched_name, info_sched), batch_size=3)
        noise = runner.initial_noise((n, 1, 32, 32), seed)
        ours = to_images(runner.sample(noise, steps, seed=seed)).transpose(0, 2, 3, 1)
    assert ours.shape == ref.shape
    assert psnr(ours, ref) >= 60.0


def test_runner_noise_is_the_pipelines_noise(reference_work: Path) -> None:
    """x_T is the first UNet input of diffusers' DDIMPipeline with the same seed, to the bit; and with that noise
    given (--init-noise) the run does not depend on the seed (DDIM with eta 0 draws nothing more)."""
    import diffusers

    pipe = diffusers.DDIMPipeline.from_pretrained(REFERENCE_MODEL, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    seen: list[torch.Tensor] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=1, output_type="np")
    with OrtSession(reference_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddim", _sched(reference_work)))
        noise = runner.initial_noise((2, 1, 32, 32), 7)
        np.testing.assert_array_equal(noise, seen[0].numpy())
        a = runner.sample(noise, 5, seed=7)
        b = runner.sample(noise.copy(), 5, seed=123)
    np.testing.assert_array_equal(a, b)


def _sched(work: Path) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads((work / "export.json").read_text())["scheduler"]


# "flow" needs its family's set-up (sigmas, shift: pipelines/flow_matching.py); tests/pipelines/test_transformer_parity.py
@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"flow"}))
def test_every_scheduler_runs_and_batches_consistently(tiny_work: Path, name: str) -> None:
    """Chunked UNet calls give the same result as one batch, for every scheduler (stochastic ones included)."""
    with OrtSession(tiny_work / "model.onnx") as s:
        noise = DenoiseRunner(s, None).initial_noise((5, 1, 16, 16), 0)  # type: ignore[arg-type]
        full = DenoiseRunner(s, make_scheduler(name, _sched(tiny_work)), batch_size=5).sample(noise, 6, seed=1)
        chunked = DenoiseRunner(s, make_scheduler(name, _sched(tiny_work)), batch_size=2).sample(noise, 6, seed=1)
    assert np.isfinite(full).all()
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5)


def diffusers_style_guided_loop(unet, scheduler, latents, cond, uncond, scale, steps):  # type: ignore[no-untyped-def]
    """StableDiffusionPipeline's denoising loop, written out on the PyTorch UNet (prompt_embeds given)."""
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    prompt_embeds = torch.cat([uncond, cond])
    for t in scheduler.timesteps:
        latent_model_input = torch.cat([latents] * 2)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        with torch.no_grad():
            noise_pred = unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    return latents


@pytest.mark.parametrize("sched_name", ["ddim", "euler", "dpm"])
def test_conditional_guided_loop_matches_diffusers_style(tiny_cond_work: Path, tiny_cond_dir: Path,
                                                         sched_name: str) -> None:
    from exporter.loading import load_unet, locate_model

    src = locate_model(tiny_cond_dir)
    unet = load_unet(src)
    rng = np.random.default_rng(0)
    n = 3
    cond = rng.standard_normal((n, TINY_COND_LEN, 12)).astype(np.float32)
    uncond = rng.standard_normal((1, TINY_COND_LEN, 12)).astype(np.float32)
    with OrtSession(tiny_cond_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler(sched_name, src.scheduler_config), batch_size=2)
        noise = runner.initial_noise((n, 4, 8, 8), 0)
        ours = runner.sample(noise, 20, cond=Conditioning(cond, uncond, 7.5))
    ref = diffusers_style_guided_loop(
        unet, make_scheduler(sched_name, src.scheduler_config), torch.from_numpy(noise), torch.from_numpy(cond),
        torch.from_numpy(np.repeat(uncond, n, 0)), 7.5, 20,
    ).numpy()
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() / scale < 1e-4


def test_stop_at_step_returns_the_state_the_unet_sees(tiny_work: Path) -> None:
    seen: dict[int, np.ndarray] = {}
    with OrtSession(tiny_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddim", _sched(tiny_work)))
        noise = runner.initial_noise((2, 1, 16, 16), 0)
        runner.sample(noise, 10, callback=lambda i, t, x: seen.__setitem__(i, x.copy()))
        x4 = runner.sample(noise, 10, stop_at_step=4)
    np.testing.assert_array_equal(x4, seen[4])


def test_use_clipped_model_output_matches_diffusers_ddim_pipeline(reference_work: Path) -> None:
    """Passed to DDIMScheduler.step as DDIMPipeline passes it: same images (PSNR >= 60 dB), different from unset."""
    import diffusers

    pipe = diffusers.DDIMPipeline.from_pretrained(REFERENCE_MODEL, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    seed, n, steps = 5, 4, 20
    ref = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
               use_clipped_model_output=True, output_type="np").images
    with OrtSession(reference_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddim", dict(pipe.scheduler.config)), batch_size=4)
        noise = runner.initial_noise((n, 1, 32, 32), seed)
        ours = to_images(runner.sample(noise, steps, use_clipped_model_output=True)).transpose(0, 2, 3, 1)
        unset = to_images(runner.sample(noise, steps)).transpose(0, 2, 3, 1)
    assert psnr(ours, ref) >= 60.0
    assert psnr(unset, ref) < 50.0


def test_clipping_without_clipped_eps_leaves_the_training_range(reference_work: Path) -> None:
    """The reference model with its clip_sample config, DDIM 100: diffusers' default step (UNet eps kept) drives some
    trajectories far beyond any noised image (|x_t| > 8); eps re-derived from the clipped x0 keeps all in range."""
    with OrtSession(reference_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddim", _sched(reference_work)), batch_size=16)
        noise = runner.initial_noise((16, 1, 32, 32), 0)
        runner.sample(noise, 100)
        unset = runner.health.summary()
        runner.sample(noise, 100, use_clipped_model_output=True)
        clipped = runner.health.summary()
    assert unset["images_off_distribution"] >= 2 and unset["peak_abs"] > 15  # type: ignore[operator]
    assert clipped["images_off_distribution"] == 0 and clipped["peak_abs"] < 6  # type: ignore[operator]


def test_use_clipped_model_output_needs_a_scheduler_that_takes_it(tiny_work: Path) -> None:
    from common.errors import UserError

    with OrtSession(tiny_work / "model.onnx") as s:
        runner = DenoiseRunner(s, make_scheduler("ddpm", _sched(tiny_work)))
        with pytest.raises(UserError, match="--use-clipped-model-output: DDPMScheduler.step does not take it"):
            runner.sample(runner.initial_noise((1, 1, 16, 16), 0), 2, use_clipped_model_output=True)
