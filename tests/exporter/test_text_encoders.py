"""T5 and CLIP text encoders of the transformer families to ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter.text_encoders import TextEncoderExport, export_family_text_encoder


def _encoder(folder: Path, cls: str):  # type: ignore[no-untyped-def]
    import transformers

    return getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()


def test_t5_with_attention_mask(tiny_transformer_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_transformer_dirs["pixart-alpha"]
    enc = _encoder(folder / "text_encoder", "T5EncoderModel")
    spec = TextEncoderExport("t5", 16, "last_hidden_state", attention_mask=True)
    rec = export_family_text_encoder(enc, spec, "text_encoder", "T5EncoderModel", folder / "tokenizer", tmp_path, 1e-4)
    assert rec["verification"]["ok"] and list(rec["inputs"]) == ["input_ids", "attention_mask"]
    assert rec["outputs"] == {"last_hidden_state": {"shape": ["batch", 16, 32], "dtype": "float32"}}
    # the mask matters: the same ids with another mask give other states
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    ids = np.arange(32, dtype=np.int64).reshape(2, 16) % 40
    full = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    half = sess.run(None, {"input_ids": ids, "attention_mask": (np.arange(16) < 8).astype(np.int64)[None]
                           .repeat(2, 0)})[0]
    assert np.max(np.abs(full[:, :8] - half[:, :8])) > 1e-3


@pytest.mark.parametrize("cls, pooled", [("CLIPTextModelWithProjection", "text_embeds"),
                                         ("CLIPTextModel", "pooler_output")])
def test_clip_outputs(tiny_transformer_dirs: dict[str, Path], tmp_path: Path, cls: str, pooled: str) -> None:
    folder = tiny_transformer_dirs["sd3" if cls.endswith("Projection") else "flux"]
    enc = _encoder(folder / "text_encoder", cls)
    spec = TextEncoderExport("clip", 24, "penultimate_hidden_state", pooled)
    rec = export_family_text_encoder(enc, spec, "text_encoder", cls, folder / "tokenizer", tmp_path, 1e-4)
    assert rec["verification"]["ok"] and rec["exporter"] == "torchscript"
    assert list(rec["outputs"]) == ["last_hidden_state", "penultimate_hidden_state", pooled]
    assert rec["outputs"][pooled]["shape"] == ["batch", 16]
