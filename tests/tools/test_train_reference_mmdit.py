"""The MMDiT reference model: tiny training runs load in diffusers' StableDiffusion3Pipeline; the bundled folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tools.__main__ import main as cli
from tools.t2i_training import measure_prompt_following
from tools.train_reference_mmdit import MMDiTConfig, RepeatedLastToken, build_models, encode_prompts, train
from validation.digit_prompts import all_prompts, digit_in_prompt

BUNDLED = REPO / "models" / "digits-mmdit"
TINY = MMDiTConfig(vae_channels=(4, 8, 8), vae_groups=4, clip_l_hidden=8, clip_l_heads=2, clip_g_hidden=16,
                   clip_g_heads=2, text_layers=1, layers=2, heads=2, head_dim=8, vae_steps=2, steps=2, batch=4)


def _load(folder: Path):
    from diffusers import StableDiffusion3Pipeline

    # Without T5, as diffusers' documentation loads SD3 without it.
    return StableDiffusion3Pipeline.from_pretrained(str(folder), text_encoder_3=None, tokenizer_3=None)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mmdit") / "digits-mmdit"
    train(out, TINY, "test")
    return out


def test_tiny_training_writes_a_folder_stable_diffusion_3_pipeline_runs(tiny_folder: Path) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    record = json.loads((tiny_folder / "training.json").read_text())
    assert record["config"]["steps"] == 2 and len(record["loss_curve_every_100"]) == 1
    assert (tiny_folder / "prompts.txt").read_text().splitlines() == all_prompts()
    assert "digits-mmdit" in (tiny_folder / "README.md").read_text()
    pipe = _load(tiny_folder)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert isinstance(pipe.transformer, SD3Transformer2DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == TINY.shift
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    assert pipe.vae.config.shift_factor == pytest.approx(record["shift_factor"])
    assert pipe.transformer.config.joint_attention_dim == TINY.clip_l_hidden + TINY.clip_g_hidden
    out = pipe(["the digit 7"], num_inference_steps=2, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_training_encodes_prompts_as_the_pipeline_does(tiny_folder: Path) -> None:
    import torch

    pipe = _load(tiny_folder)
    prompts = ["the digit 7", "", "a handwritten digit three"]
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)
        ids = pipe.tokenizer(prompts, padding="max_length", max_length=16, truncation=True,
                             return_tensors="pt").input_ids
        ours, ours_pooled = encode_prompts((pipe.text_encoder, pipe.text_encoder_2), ids, 256)
    assert embeds.shape == (3, 16 + 256, TINY.clip_l_hidden + TINY.clip_g_hidden) and ours.shape[1] == 17
    torch.testing.assert_close(ours[:, :16], embeds[:, :16])
    assert not embeds[:, 16:].any() and not ours[:, 16:].any()
    torch.testing.assert_close(ours_pooled, pooled)


@pytest.mark.parametrize("copies", [0, 1, 5, 256])
def test_one_biased_zero_token_computes_what_many_zero_tokens_do(copies: int) -> None:
    import torch

    torch.manual_seed(0)
    _, _, _, transformer = build_models(TINY, 300, 298, 299)
    with torch.no_grad():
        for p in transformer.parameters():  # adaLN and output layers start at zero: make every path count
            p.add_(torch.randn_like(p) * 0.2)
        x, t = torch.randn(2, 4, 8, 8), torch.tensor([900.0, 30.0])
        clip, pooled = torch.randn(2, 16, 24), torch.randn(2, 24)
        full = transformer(x, torch.cat([clip, torch.zeros(2, copies, 24)], 1), pooled, t).sample
        transformer.set_attn_processor(RepeatedLastToken(copies))
        one = transformer(x, torch.cat([clip, torch.zeros(2, 1, 24)], 1), pooled, t).sample
    assert full.abs().mean() > 0.1
    torch.testing.assert_close(one, full, rtol=1e-4, atol=1e-4)


def test_tiny_training_is_deterministic_from_the_seed(tiny_folder: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    train(tmp_path / "again", TINY, "test")
    for part in ("transformer/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model",
                 "text_encoder_2/model"):
        a, b = (load_file(str(f / f"{part}.safetensors")) for f in (tiny_folder, tmp_path / "again"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_measure_prompt_following_runs_the_folders_own_pipeline(tiny_folder: Path) -> None:
    result, images = measure_prompt_following(tiny_folder, REPO / "models" / "digit-classifier",
                                              images_per_digit=1, steps=2)
    assert images.shape == (10, 3, 32, 32) and len(result["predicted"]) == 10
    assert result["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert result["share"] == pytest.approx(np.mean(np.array(result["predicted"]) == np.arange(10)))


def test_cli_refuses_bad_input_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep")
    assert cli(["train-reference-mmdit", str(tmp_path / "x"), "--no-measure"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli(["train-reference-mmdit", str(tmp_path / "y"), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and err.count("\n") == 1
    assert cli(["train-reference-mmdit", str(tmp_path / "y"), "--weighting", "mode"]) == 2
    assert "--weighting" in capsys.readouterr().err
    assert cli(["train-reference-mmdit", str(tmp_path / "y"), "--classifier", str(tmp_path / "none")]) == 2
    assert "--classifier" in capsys.readouterr().err
    assert (tmp_path / "x" / "file").read_text() == "keep" and not (tmp_path / "y").exists()


@pytest.mark.skipif(not (BUNDLED / "model_index.json").is_file(), reason="models/digits-mmdit not trained yet")
def test_bundled_model_loads_offline_with_every_component() -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    pipe = _load(BUNDLED)
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        assert isinstance(tok, CLIPTokenizer) and tok.model_max_length == 16
    assert isinstance(pipe.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.transformer, SD3Transformer2DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.transformer.config.sample_size * pipe.vae_scale_factor == 32
    assert pipe.transformer.config.attention_head_dim % 16 == 0
    weights = sum(f.stat().st_size for f in BUNDLED.rglob("*.safetensors"))
    assert weights <= 10 * 2**20
    prompts = (BUNDLED / "prompts.txt").read_text().splitlines()
    assert prompts and all(digit_in_prompt(p) is not None for p in prompts)
    record = json.loads((BUNDLED / "training.json").read_text())
    assert record["scaling_factor"] == pytest.approx(pipe.vae.config.scaling_factor)
    assert record["shift_factor"] == pytest.approx(pipe.vae.config.shift_factor)
    assert record["prompt_following"]["images"] == 100
