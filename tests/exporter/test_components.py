"""Export of text-to-image pipeline folders: one ONNX per component, each checked, recorded in export.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch

from engines.ort_session import OrtSession
from exporter.components import _text_wrapper
from exporter.verify import verify_outputs
from tests.conftest import run_cli
from tests.tiny_pipelines import SEQ_LEN


def _io(path: Path) -> tuple[list[str], list[str]]:
    m = onnx.load(str(path), load_external_data=False)
    return [i.name for i in m.graph.input], [o.name for o in m.graph.output]


def test_sd_pipeline_exports_three_components(tiny_sd_work: Path, tiny_sd_dir: Path) -> None:
    assert sorted(p.name for p in tiny_sd_work.iterdir()) == [
        "export.json", "model.onnx", "text_encoder.onnx", "vae_decoder.onnx"]
    assert _io(tiny_sd_work / "text_encoder.onnx") == (["input_ids"], ["last_hidden_state"])
    assert _io(tiny_sd_work / "vae_decoder.onnx") == (["latents"], ["images"])
    assert _io(tiny_sd_work / "model.onnx") == (["sample", "timestep", "encoder_hidden_states"], ["out"])
    info = json.loads((tiny_sd_work / "export.json").read_text())
    enc = info["components"]["text_encoder"]
    assert enc["sequence_length"] == SEQ_LEN  # the tokenizer's model_max_length
    assert enc["tokenizer_dir"] == str((tiny_sd_dir / "tokenizer").resolve())
    assert enc["verification"]["max_rel_error"] < 1e-4
    assert info["inputs"]["encoder_hidden_states"]["shape"] == ["batch", SEQ_LEN, 16]
    vae = info["components"]["vae_decoder"]
    assert vae["scaling_factor"] == 0.18215 and vae["verification"]["max_rel_error"] < 1e-4
    assert vae["outputs"]["images"]["shape"] == ["batch", 3, 16, 16]
    assert info["family"] == "sd" and info["text_to_image"]["image_size"] == [16, 16]


def test_sdxl_pipeline_exports_added_conditions(tiny_sdxl_work: Path) -> None:
    assert _io(tiny_sdxl_work / "model.onnx")[0] == [
        "sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert _io(tiny_sdxl_work / "text_encoder.onnx")[1] == ["last_hidden_state", "penultimate_hidden_state"]
    assert _io(tiny_sdxl_work / "text_encoder_2.onnx")[1] == [
        "last_hidden_state", "penultimate_hidden_state", "text_embeds"]
    info = json.loads((tiny_sdxl_work / "export.json").read_text())
    assert info["inputs"]["text_embeds"]["shape"] == ["batch", 16]
    assert info["inputs"]["time_ids"]["shape"] == ["batch", 6]
    assert info["inputs"]["encoder_hidden_states"]["shape"] == ["batch", SEQ_LEN, 32]  # 16 + 16 concatenated
    assert info["components"]["text_encoder_2"]["pooled_output"] == "text_embeds"
    assert info["text_to_image"]["force_zeros_for_empty_prompt"] is True
    assert info["verification"]["max_rel_error"] < 1e-4


def test_cond_len_overrides_the_tokenizer_length(tiny_sd_dir: Path, tmp_path: Path) -> None:
    assert run_cli("export", "--model", tiny_sd_dir, tmp_path / "w", "--cond-len", "10") == 0
    info = json.loads((tmp_path / "w" / "export.json").read_text())
    assert info["components"]["text_encoder"]["sequence_length"] == 10
    assert info["inputs"]["encoder_hidden_states"]["shape"] == ["batch", 10, 16]


def test_text_encoder_batch_is_dynamic(tiny_sd_work: Path, tiny_sd_dir: Path) -> None:
    from transformers import CLIPTextModel

    ref_model = CLIPTextModel.from_pretrained(tiny_sd_dir / "text_encoder").eval()
    ids = np.random.default_rng(3).integers(0, ref_model.config.vocab_size, (3, SEQ_LEN)).astype(np.int64)
    with OrtSession(tiny_sd_work / "text_encoder.onnx") as s:
        got = s.run({"input_ids": ids})["last_hidden_state"]
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids))[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_verification_detects_another_encoder(tiny_sd_work: Path, tiny_sdxl_dir: Path) -> None:
    """The same structure with other weights must fail the check (so the check can fail)."""
    from transformers import CLIPTextModel

    other = CLIPTextModel.from_pretrained(tiny_sdxl_dir / "text_encoder").eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids = np.random.default_rng(0).integers(0, 40, (2, SEQ_LEN)).astype(np.int64)
    check = verify_outputs(_text_wrapper(other, False, False), tiny_sd_work / "text_encoder.onnx",
                           {"input_ids": ids}, ["last_hidden_state"], 1e-3)
    assert not check["ok"] and check["max_rel_error"] > 1e-2
