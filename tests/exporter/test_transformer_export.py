"""Transformer denoisers to ONNX: signatures per kind, exporter choice (dynamo for FLUX), checks against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from exporter.onnx_fixes import count_float64
from exporter.transformer_export import denoiser_signature, example_feeds, export_denoiser, verify_denoiser

CASES = {  # tiny pipeline -> (diffusers class, kind, text tokens)
    "sd3": ("SD3Transformer2DModel", "sd3", 24 + 16),
    "flux": ("FluxTransformer2DModel", "flux", 16),
    "flux-schnell": ("FluxTransformer2DModel", "flux", 16),
    "pixart-alpha": ("PixArtTransformer2DModel", "pixart", 16),
    "pixart-sigma": ("PixArtTransformer2DModel", "pixart", 16),
    "dit": ("DiTTransformer2DModel", "dit", None),
}
INPUTS = {
    "sd3": ["sample", "timestep", "encoder_hidden_states", "pooled_projections"],
    "flux": ["sample", "timestep", "guidance", "pooled_projections", "encoder_hidden_states", "txt_ids", "img_ids"],
    "flux-schnell": ["sample", "timestep", "pooled_projections", "encoder_hidden_states", "txt_ids", "img_ids"],
    "pixart-alpha": ["sample", "timestep", "encoder_hidden_states", "encoder_attention_mask", "resolution",
                     "aspect_ratio"],
    "pixart-sigma": ["sample", "timestep", "encoder_hidden_states", "encoder_attention_mask"],
    "dit": ["sample", "timestep", "class_labels"],
}


def _load(dirs: dict[str, Path], name: str):  # type: ignore[no-untyped-def]
    import diffusers

    cls, kind, text_len = CASES[name]
    model = getattr(diffusers, cls).from_pretrained(dirs[name] / "transformer").eval()
    return model, denoiser_signature(kind, model, (8, 8), text_len, vae_scale=2)


@pytest.mark.parametrize("name", list(CASES))
def test_signature_per_kind(tiny_transformer_dirs: dict[str, Path], name: str) -> None:
    _, sig = _load(tiny_transformer_dirs, name)
    assert sig.input_names == INPUTS[name]
    out = {"flux": ("batch", 16, 16), "flux-schnell": ("batch", 16, 16), "sd3": ("batch", 4, 8, 8)}
    assert sig.output.shape == out.get(name, ("batch", 8, 8, 8))  # learned sigma: 2×4 channels
    feeds = example_feeds(sig, 3, [5.0] * 3, 0)
    assert [f.shape[0] for n, f in feeds.items() if n not in ("txt_ids", "img_ids")] == [3] * (len(feeds) - 2 * (
        "img_ids" in feeds))


@pytest.mark.parametrize("name", ["sd3", "flux", "pixart-alpha", "dit"])
def test_export_matches_pytorch(tiny_transformer_dirs: dict[str, Path], tmp_path: Path, name: str) -> None:
    model, sig = _load(tiny_transformer_dirs, name)
    outcome = export_denoiser(model, sig, tmp_path / "model.onnx")
    check = verify_denoiser(model, tmp_path / "model.onnx", sig, [20.0, 500.0, 999.0], 1e-4)
    assert check.ok, check.rel_errors
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert [i.name for i in graph.graph.input] == INPUTS[name]
    assert count_float64(graph) == 0
    if name == "flux":  # the legacy exporter has no aten::rms_norm; the dynamo graph's RoPE math was float64
        assert outcome.exporter == "dynamo" and "rms_norm" in outcome.legacy_error
        assert outcome.float64_demoted > 0
    else:
        assert outcome.exporter == "torchscript" and outcome.legacy_error == ""
    if name == "pixart-alpha":  # If(Shape[1] == 1, Squeeze, Identity) resolved at export
        assert outcome.shape_branches == 1 and not any(n.op_type == "If" for n in graph.graph.node)


def test_dynamo_pixart_loads_in_onnx_runtime(tiny_transformer_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The dynamo exporter writes PixArt's no-op ``squeeze(1)`` as a Squeeze that ONNX Runtime refuses; the repair
    makes it an Identity (static batch: torch.export cannot trace PixArt with a dynamic batch)."""
    import torch

    from exporter.dynamo_export import export_dynamo
    from exporter.transformer_export import denoiser_for_onnx
    from engines.ort_session import OrtSession

    model, sig = _load(tiny_transformer_dirs, "pixart-sigma")
    feeds = example_feeds(sig, 2, [20.0, 700.0], 3)
    module = denoiser_for_onnx(model, sig)
    outcome = export_dynamo(module, tuple(torch.from_numpy(feeds[n]) for n in sig.input_names), sig.input_names,
                            ["out"], {}, tmp_path / "model.onnx")
    assert outcome.exporter == "dynamo" and outcome.noop_squeezes == 1
    with torch.no_grad():
        ref = module(*[torch.from_numpy(feeds[n]) for n in sig.input_names]).numpy()
    with OrtSession(tmp_path / "model.onnx") as sess:
        got = sess.run(feeds)["out"]
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-4
