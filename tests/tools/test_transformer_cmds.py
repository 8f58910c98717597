"""The command line on tiny transformer pipelines: export (SD3, FLUX), and for SD3 sample (against diffusers),
calibrate on the flow-matching trajectory, quantize with the family's keep-float defaults, INT8 sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import run_cli

PROMPT = "a photo of 3"


@pytest.fixture(scope="module")
def sd3_work(tiny_transformer_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("work") / "sd3"
    assert run_cli("export", "--model", tiny_transformer_dirs["sd3"], work, "--cond-len", "16") == 0
    return work


def test_sd3_export_record(sd3_work: Path) -> None:
    info = json.loads((sd3_work / "export.json").read_text())
    assert info["family"] == "sd3" and info["denoiser_kind"] == "sd3"
    assert info["onnx"]["exporter"] == "torchscript"
    assert info["inputs"]["encoder_hidden_states"]["shape"] == ["batch", 24 + 16, 32]
    assert info["text_to_image"]["text_encoders"] == ["text_encoder", "text_encoder_2", "text_encoder_3"]
    assert info["components"]["text_encoder_3"]["sequence_length"] == 16
    assert info["components"]["vae_decoder"]["shift_factor"] == pytest.approx(0.1)


def test_sd3_sample_matches_diffusers(sd3_work: Path, tiny_transformer_dirs: dict[str, Path]) -> None:
    from diffusers import StableDiffusion3Pipeline

    assert run_cli("sample", sd3_work, "--scheduler", "flow", "--steps", "4", "--num", "2", "--prompt", PROMPT,
                   "--backend", "ort", "--guidance-scale", "5.0") == 0
    ours = np.load(sd3_work / "samples" / "fp32_flow4.samples.npy")
    noise = np.load(sd3_work / "samples" / "fp32_flow4.noise.npy")
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_transformer_dirs["sd3"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe([PROMPT] * 2, num_inference_steps=4, guidance_scale=5.0, latents=torch.from_numpy(noise),
               max_sequence_length=16, height=16, width=16, output_type="latent").images.numpy()
    mse = float(np.mean((ours - ref) ** 2))
    assert 10 * np.log10(float(np.max(np.abs(ref))) ** 2 / mse) >= 60.0


def test_sd3_calibrate_quantize_int8(sd3_work: Path, tmp_path: Path) -> None:
    work = tmp_path / "sd3"
    shutil.copytree(sd3_work, work, ignore=shutil.ignore_patterns("samples"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of 3\ndigit seven, thin\nthe number one\n")
    assert run_cli("calibrate", work, "--scheduler", "flow", "--prompts", prompts, "--samples", "16",
                   "--steps", "10") == 0
    assert run_cli("quantize", work, "--target", "onnxruntime") == 0
    model = onnx.load(str(work / "model.int8.ort.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    linear = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and "/attn/MatMul" not in n.name]
    quantized = {n.name for n in linear if all(producer.get(i) is not None and
                                               producer[i].op_type == "DequantizeLinear" for i in n.input[:2])}
    kept = {n.name for n in linear} - quantized
    assert kept == {"/inner/context_embedder/MatMul", "/inner/norm_out/linear/Gemm", "/inner/proj_out/MatMul",
                    *(f"/inner/time_text_embed/{e}/linear_{i}/Gemm" for e in ("text_embedder", "timestep_embedder")
                      for i in (1, 2))}
    assert len(quantized) >= 20  # every block Linear: q/k/v/out of both streams, adaLN, feed-forward
    assert run_cli("sample", work, "--scheduler", "flow", "--steps", "10", "--num", "2", "--prompt", PROMPT,
                   "--precision", "int8", "--backend", "ort") == 0
    int8 = np.load(work / "samples" / "int8_flow10.samples.npy")
    assert np.isfinite(int8).all() and int8.shape == (2, 4, 8, 8)


def test_flux_export_uses_dynamo(tiny_transformer_dirs: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "flux"
    assert run_cli("export", "--model", tiny_transformer_dirs["flux"], work, "--cond-len", "16") == 0
    info = json.loads((work / "export.json").read_text())
    assert info["family"] == "flux"
    assert info["onnx"]["exporter"] == "dynamo" and "rms_norm" in info["onnx"]["legacy_error"]
    assert info["onnx"]["opset"] >= 18 and info["onnx"]["float64_tensors_demoted"] > 0
    assert info["inputs"]["sample"]["shape"] == ["batch", 16, 16]  # packed: 4×4 tokens of 4·4 channels
    names = {n.name for n in onnx.load(str(work / "model.onnx")).graph.node}
    assert "/inner/context_embedder/MatMul" in names  # the keep-float patterns see module paths


def test_transformer_folder_without_denoiser_is_one_line(tiny_transformer_dirs: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "sd3-broken"
    shutil.copytree(tiny_transformer_dirs["sd3"], folder)
    shutil.rmtree(folder / "transformer")
    assert run_cli("export", "--model", folder, tmp_path / "w") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sd3-broken" in err[0]
    assert not (tmp_path / "w").exists()
