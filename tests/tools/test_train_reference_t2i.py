"""The text-to-image reference model: tiny training runs load in diffusers' StableDiffusionPipeline; the bundled folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tools.__main__ import main as cli
from tools.t2i_tokenizer import bpe_vocab, build_tokenizer, save_tokenizer
from tools.train_reference_t2i import T2IConfig, measure_prompt_following, train
from validation.digit_prompts import VOCABULARY, all_prompts, digit_in_prompt

BUNDLED = REPO / "models" / "digits-t2i"
TINY = T2IConfig(vae_channels=(4, 8, 8), vae_groups=4, unet_channels=(8, 16), unet_groups=4, unet_head_dim=4,
                 text_hidden=8, text_layers=1, text_heads=2, vae_steps=2, steps=2, batch=4, threads=1)


def _load(folder: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t2i") / "digits-t2i"
    train(out, TINY, "test")
    return out


def test_tokenizer_is_built_offline_with_one_token_per_word(tmp_path: Path) -> None:
    tok = build_tokenizer(VOCABULARY, 16)
    ids = tok("a handwritten digit seven", padding="max_length", max_length=16, truncation=True).input_ids
    assert tok.convert_ids_to_tokens(ids[:6]) == ["<|startoftext|>", "a</w>", "handwritten</w>", "digit</w>",
                                                  "seven</w>", "<|endoftext|>"]
    assert ids[6:] == [tok.eos_token_id] * 10  # <|endoftext|> pads, as in Stable Diffusion
    long = tok("seven " * 40, padding="max_length", max_length=16, truncation=True).input_ids
    assert len(long) == 16 and long[-1] == tok.eos_token_id
    assert len(tok("an unknown word, spelled in bytes").input_ids) > 6  # any text tokenizes
    save_tokenizer(tok, VOCABULARY, tmp_path / "tok")
    vocab, merges = bpe_vocab(VOCABULARY)
    assert json.loads((tmp_path / "tok" / "vocab.json").read_text()) == vocab
    assert (tmp_path / "tok" / "merges.txt").read_text().splitlines()[1:] == [f"{a} {b}" for a, b in merges]
    from transformers import CLIPTokenizer

    # From vocab.json + merges.txt alone (no tokenizer.json), the same ids.
    (tmp_path / "tok" / "tokenizer.json").unlink()
    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    for prompt in all_prompts()[:12] + [""]:
        assert again(prompt).input_ids == tok(prompt).input_ids
    assert again.model_max_length == 16


def test_bpe_vocab_rejects_words_it_cannot_spell() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        bpe_vocab(["Seven"])


def test_tiny_training_writes_a_folder_stable_diffusion_pipeline_runs(tiny_folder: Path) -> None:
    import torch

    record = json.loads((tiny_folder / "training.json").read_text())
    assert record["config"]["steps"] == 2 and len(record["loss_curve_every_100"]) == 1
    assert (tiny_folder / "prompts.txt").read_text().splitlines() == all_prompts()
    pipe = _load(tiny_folder)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    out = pipe(["the digit 7"], num_inference_steps=1, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_tiny_training_is_deterministic_from_the_seed(tiny_folder: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    train(tmp_path / "again", TINY, "test")
    for part in ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model"):
        a, b = (load_file(str(f / f"{part}.safetensors")) for f in (tiny_folder, tmp_path / "again"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_training_continues_from_a_folder_keeping_its_vae(tiny_folder: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from safetensors.numpy import load_file

    train(tmp_path / "more", replace(TINY, vae_steps=0, seed=1), "test", init=tiny_folder)
    record = json.loads((tmp_path / "more" / "training.json").read_text())
    assert record["init"]["folder"] == str(tiny_folder) and record["init"]["record"]["config"]["seed"] == 0
    assert record["vae_final_loss_mean_last_100"] is None
    vae = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tiny_folder / vae)), load_file(str(tmp_path / "more" / vae))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    unet = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tiny_folder / unet)), load_file(str(tmp_path / "more" / unet))
    assert not all(np.array_equal(a[k], b[k]) for k in a)


def test_measure_prompt_following_reads_every_image(tiny_folder: Path) -> None:
    """Image d is diffusers' StableDiffusionPipeline output for digit d's first prompt (seed 0, DDIM, guidance 5),
    and each prediction is the classifier's reading of that image."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from validation.digit_prompts import prompts_for_digit
    from validation.digit_classifier import DigitFeatures

    classifier = REPO / "models" / "digit-classifier"
    result, images = measure_prompt_following(tiny_folder, classifier, images_per_digit=1, steps=2)
    assert images.shape == (10, 3, 32, 32) and len(result["predicted"]) == 10
    assert result["predicted"] == DigitFeatures(classifier).predict(images.mean(axis=1, keepdims=True)).tolist()
    assert result["share"] == pytest.approx(np.mean(np.array(result["predicted"]) == np.arange(10)))
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_folder), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for digit in (2, 7):
        with torch.no_grad():
            out = pipe([prompts_for_digit(digit)[0]], num_inference_steps=2, guidance_scale=5.0,
                       generator=[torch.Generator().manual_seed(0)], output_type="np").images
        np.testing.assert_allclose(images[digit], out[0].transpose(2, 0, 1), rtol=0, atol=1e-6)


def test_cli_refuses_a_non_empty_output_and_bad_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep")
    assert cli(["train-reference-t2i", str(tmp_path / "x"), "--no-measure"]) == 2
    assert cli(["train-reference-t2i", str(tmp_path / "y"), "--steps", "0"]) == 2
    assert cli(["train-reference-t2i", str(tmp_path / "y"), "--vae-steps", "0"]) == 2  # only with --init
    assert cli(["train-reference-t2i", str(tmp_path / "y"), "--init", str(tmp_path / "x")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert (tmp_path / "x" / "file").read_text() == "keep" and not (tmp_path / "y").exists()


def test_bundled_model_loads_offline_with_every_component() -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = _load(BUNDLED)
    assert isinstance(pipe.tokenizer, CLIPTokenizer) and pipe.tokenizer.model_max_length == 16
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 32 and pipe.unet.config.sample_size < 32
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    weights = sum(f.stat().st_size for f in BUNDLED.rglob("*.safetensors"))
    assert weights <= 15 * 2**20
    prompts = (BUNDLED / "prompts.txt").read_text().splitlines()
    assert prompts and all(digit_in_prompt(p) is not None for p in prompts)
    record = json.loads((BUNDLED / "training.json").read_text())
    assert record["scaling_factor"] == pytest.approx(pipe.vae.config.scaling_factor)
    assert record["prompt_following"]["images"] == 100
