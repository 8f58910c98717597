"""Export the other components of a text-to-image pipeline: text encoder(s) and VAE decoder, one ONNX each.

- ``text_encoder.onnx`` (``text_encoder_2.onnx``): ``input_ids`` B×L int64 -> ``last_hidden_state`` B×L×D; when the
  family's denoiser takes it also ``penultimate_hidden_state`` (``hidden_states[-2]``, what SDXL feeds the UNet) and,
  for an encoder with a projection (``CLIPTextModelWithProjection``), the pooled ``text_embeds`` B×P.
- ``vae_decoder.onnx``: ``latents`` B×C×h×w (already divided by the scaling factor) -> ``images`` B×3×H×W in [-1, 1].

Each is checked against PyTorch on one batch; the record goes to export.json under ``components``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CheckFailed, UserError
from common.hashing import onnx_model_sha256
from common.lazy import lazy_import
from exporter.onnx_export import DEFAULT_OPSET, export_module
from exporter.pipeline_folder import PipelineSource, TextEncoderSource, load_text_encoder, load_vae
from exporter.verify import verify_outputs
from pipelines.families.family import LAST_HIDDEN, PENULTIMATE_HIDDEN

INPUT_IDS = "input_ids"
POOLED = "text_embeds"
LATENTS = "latents"
IMAGES = "images"
VAE_DECODER = "vae_decoder"


def sequence_length(tokenizer: Any, encoder: Any, override: int | None) -> int:
    """The tokenizer's ``model_max_length`` (capped by the encoder's position embeddings), or ``override``."""
    positions = int(getattr(encoder.config, "max_position_embeddings", 77))
    if override is not None:
        if not 1 <= override <= positions:
            raise UserError(f"--cond-len {override} out of range: the text encoder has {positions} positions")
        return override
    length = int(getattr(tokenizer, "model_max_length", positions) or positions)
    return min(length, positions)


def _text_wrapper(encoder: Any, penultimate: bool, pooled: bool) -> Any:
    torch = lazy_import("torch")

    class TextEncoderForOnnx(torch.nn.Module):  # type: ignore[misc, name-defined]
        """input_ids -> (last_hidden_state[, penultimate_hidden_state][, text_embeds])."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any) -> Any:
            out = self.inner(input_ids, output_hidden_states=penultimate, return_dict=True)
            outs = [out.last_hidden_state]
            if penultimate:
                outs.append(out.hidden_states[-2])
            if pooled:
                outs.append(out.text_embeds)
            return tuple(outs)

    return TextEncoderForOnnx(encoder).eval()


def _vae_wrapper(vae: Any) -> Any:
    torch = lazy_import("torch")

    class VaeDecoderForOnnx(torch.nn.Module):  # type: ignore[misc, name-defined]
        """latents (already / scaling_factor) -> images in [-1, 1]."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, latents: Any) -> Any:
            return self.inner.decode(latents, return_dict=False)[0]

    return VaeDecoderForOnnx(vae).eval()


def _shape(arr: np.ndarray) -> list[int | str]:
    return ["batch", *[int(d) for d in arr.shape[1:]]]


def export_text_encoder(source: TextEncoderSource, tokenizer: Any, out_dir: Path, cond_len: int | None,
                        tolerance: float, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export one text encoder to ``out_dir/<name>.onnx`` (with the hidden state its family's denoiser takes),
    verify it, and return its export.json record."""
    torch = lazy_import("torch")
    encoder = load_text_encoder(source)
    length = sequence_length(tokenizer, encoder, cond_len)
    pooled = hasattr(encoder, "text_projection")
    penultimate = source.hidden_output == PENULTIMATE_HIDDEN
    outputs = [LAST_HIDDEN] + ([PENULTIMATE_HIDDEN] if penultimate else []) + ([POOLED] if pooled else [])
    module = _text_wrapper(encoder, penultimate, pooled)
    vocab = int(encoder.config.vocab_size)
    ids = np.random.default_rng(0).integers(0, vocab, (2, length)).astype(np.int64)
    path = out_dir / f"{source.name}.onnx"
    dynamic = {n: {0: "batch"} for n in [INPUT_IDS, *outputs]}
    large = export_module(module, (torch.from_numpy(ids),), [INPUT_IDS], outputs, dynamic, path, opset)
    check = verify_outputs(module, path, {INPUT_IDS: ids}, outputs, tolerance)
    _raise_unless_ok(check, path.name, tolerance)
    with torch.no_grad():
        shapes = [o.numpy() for o in module(torch.from_numpy(ids[:1]))]
    return {
        "file": path.name,
        "external_data": (path.name + ".data") if large else None,
        "sha256": onnx_model_sha256(path),
        "class": source.class_name,
        "source_dir": str(source.folder.resolve()),
        "tokenizer_dir": str(source.tokenizer_dir.resolve()),
        "sequence_length": length,
        "inputs": {INPUT_IDS: {"shape": ["batch", length], "dtype": "int64"}},
        "outputs": {n: {"shape": _shape(a), "dtype": "float32"} for n, a in zip(outputs, shapes, strict=True)},
        "hidden_output": source.hidden_output,
        "pooled_output": POOLED if pooled else None,
        "num_parameters": sum(p.numel() for p in encoder.parameters()),
        "verification": check,
    }


def export_vae_decoder(vae_dir: Path, latent_shape: tuple[int, int, int], out_dir: Path, tolerance: float,
                       opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export the VAE's decoder for latents of ``latent_shape`` (C, h, w) to ``out_dir/vae_decoder.onnx``, verify it,
    and return its export.json record (scaling and shift factors included)."""
    torch = lazy_import("torch")
    vae = load_vae(vae_dir)
    cfg = vae.config
    if int(cfg.latent_channels) != latent_shape[0]:
        raise UserError(f"'{vae_dir}': the VAE has {cfg.latent_channels} latent channels but the UNet takes "
                        f"{latent_shape[0]}")
    module = _vae_wrapper(vae)
    latents = np.random.default_rng(0).standard_normal((2, *latent_shape)).astype(np.float32)
    path = out_dir / f"{VAE_DECODER}.onnx"
    dynamic = {n: {0: "batch"} for n in (LATENTS, IMAGES)}
    large = export_module(module, (torch.from_numpy(latents),), [LATENTS], [IMAGES], dynamic, path, opset)
    check = verify_outputs(module, path, {LATENTS: latents}, [IMAGES], tolerance)
    _raise_unless_ok(check, path.name, tolerance)
    with torch.no_grad():
        image = module(torch.from_numpy(latents[:1])).numpy()
    shift = getattr(cfg, "shift_factor", None)
    return {
        "file": path.name,
        "external_data": (path.name + ".data") if large else None,
        "sha256": onnx_model_sha256(path),
        "source_dir": str(Path(vae_dir).resolve()),
        "scaling_factor": float(cfg.scaling_factor),
        "shift_factor": None if shift is None else float(shift),
        "inputs": {LATENTS: {"shape": ["batch", *latent_shape], "dtype": "float32"}},
        "outputs": {IMAGES: {"shape": _shape(image), "dtype": "float32"}},
        "num_parameters": sum(p.numel() for m in (vae.decoder, vae.post_quant_conv) if m is not None
                              for p in m.parameters()),
        "verification": check,
    }


def export_components(pipe: PipelineSource, latent_shape: tuple[int, int, int], out_dir: Path,
                      cond_len: int | None, tolerance: float, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export every text encoder and the VAE decoder of ``pipe`` into ``out_dir``; the ``components`` record."""
    from pipelines.tokenizers import load_tokenizer

    records: dict[str, Any] = {}
    for enc in pipe.text_encoders:
        tokenizer = load_tokenizer(enc.tokenizer_dir)
        records[enc.name] = export_text_encoder(enc, tokenizer, out_dir, cond_len, tolerance, opset)
    lengths = {r["sequence_length"] for r in records.values()}
    if len(lengths) != 1:
        raise UserError(f"--model '{pipe.root}': the tokenizers have different lengths {sorted(lengths)}; "
                        "set one with --cond-len")
    records[VAE_DECODER] = export_vae_decoder(pipe.vae_dir, latent_shape, out_dir, tolerance, opset)
    return records


def check_unet_fits(pipe: PipelineSource, records: dict[str, Any], cond_dim: int | None,
                    pooled_dim: int | None) -> None:
    """The UNet must take what the text encoders give: hidden size (summed over the encoders) and pooled size."""
    hidden = sum(records[e.name]["outputs"][records[e.name]["hidden_output"]]["shape"][-1] for e in pipe.text_encoders)
    if cond_dim != hidden:
        raise UserError(f"--model '{pipe.root}': the UNet's cross_attention_dim is {cond_dim} but the text "
                        f"encoder(s) give {hidden}")
    pooled = [records[e.name]["outputs"][POOLED]["shape"][-1] for e in pipe.text_encoders
              if records[e.name]["pooled_output"]]
    if pooled_dim is not None and (not pooled or pooled[-1] != pooled_dim):
        raise UserError(f"--model '{pipe.root}': the UNet takes a pooled text embedding of size {pooled_dim} but "
                        f"the text encoders give {pooled[-1] if pooled else 'none'}")


def text_to_image_record(pipe: PipelineSource, image_size: tuple[int, int]) -> dict[str, Any]:
    """The ``text_to_image`` part of export.json: how the runner puts the components together."""
    return {
        "model_dir": str(pipe.root.resolve()),
        "text_encoders": [e.name for e in pipe.text_encoders],
        "vae_decoder": VAE_DECODER,
        "force_zeros_for_empty_prompt": pipe.force_zeros_for_empty_prompt,
        "image_size": list(image_size),
    }


def _raise_unless_ok(check: dict[str, Any], name: str, tolerance: float) -> None:
    if not check["ok"]:
        raise CheckFailed(f"{name} differs from PyTorch: max relative error {check['max_rel_error']:.2e} > "
                          f"tolerance {tolerance:g}; nothing written")
