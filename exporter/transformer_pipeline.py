"""Export a transformer family's pipeline folder (SD3, FLUX, PixArt, DiT): text encoders as the family plans them,
the denoiser with its plain-tensor signature, the VAE decoder; each checked against PyTorch.

Sizes: the latents are the denoiser's ``sample_size`` (SD3, PixArt, DiT) or, for FLUX (whose transformer has none),
the VAE's ``sample_size`` in pixels over the VAE's scale, as each pipeline's default image size. Token counts: a
CLIP encoder's tokenizer ``model_max_length`` (capped by its positions); T5's is the pipeline's own default
(``max_sequence_length``: SD3 256, FLUX 512, PixArt-α 120, PixArt-Σ 300) unless ``--cond-len`` gives one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CheckFailed, UserError
from common.hashing import onnx_model_sha256
from exporter.components import VAE_DECODER, export_vae_decoder, sequence_length
from exporter.onnx_export import DEFAULT_OPSET, OUTPUT
from exporter.pipeline_folder import PipelineSource, TextEncoderSource, load_text_encoder
from exporter.text_encoders import TextEncoderExport, export_family_text_encoder
from exporter.transformer_export import DenoiserSignature, denoiser_signature, export_denoiser, verify_denoiser
from exporter.verify import default_timesteps
from pipelines.families.family import Family
from pipelines.families.transformer_parts import TransformerParts


@dataclass(frozen=True)
class TransformerExport:
    """What export.json records of the denoiser (``onnx``, ``inputs``, ``outputs``, ``verification``...) and the
    other components (``components``, ``text_to_image``)."""

    denoiser: dict[str, Any]
    components: dict[str, Any]
    text_to_image: dict[str, Any] | None


def latent_size(transformer: Any, vae_config: dict[str, Any]) -> tuple[int, tuple[int, int], int]:
    """(latent channels, (h, w), VAE scale) of the pipeline's default image size (see the module docstring)."""
    scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    size = getattr(transformer.config, "sample_size", None)
    if size is None:
        size = int(vae_config.get("sample_size", 1024)) // scale
    side = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return int(vae_config["latent_channels"]), side, scale


def t5_length(parts: TransformerParts, class_name: str, cond_len: int | None) -> int:
    """T5's token count: ``--cond-len``, else the pipeline's own default."""
    if cond_len is not None:
        if cond_len < 1:
            raise UserError(f"--cond-len {cond_len} must be >= 1")
        return cond_len
    from pipelines.families.pixart import T5_LENGTH as PIXART_T5

    return PIXART_T5.get(class_name, parts.t5_length or 0) if parts.kind == "pixart" else int(parts.t5_length or 0)


def export_text_encoders(pipe: PipelineSource, parts: TransformerParts, out_dir: Path, cond_len: int | None,
                         tolerance: float, opset: int) -> tuple[dict[str, Any], int]:
    """Every text encoder the folder has, exported as the family plans it; (records by name, T5 tokens)."""
    from pipelines.tokenizers import load_tokenizer

    t5_len = t5_length(parts, pipe.class_name, cond_len)
    present = {e.name: e for e in pipe.text_encoders}
    records: dict[str, Any] = {}
    for plan in parts.encoders:
        source: TextEncoderSource | None = present.get(plan.encoder)
        if source is None:
            continue
        encoder = load_text_encoder(source)
        length = t5_len if plan.kind == "t5" else sequence_length(load_tokenizer(source.tokenizer_dir), encoder, None)
        spec = TextEncoderExport(plan.kind, length, plan.hidden_output, plan.pooled_output, plan.attention_mask)
        print(f"  {plan.encoder} ({source.class_name}, {plan.kind}, {length} tokens) ...")
        records[plan.encoder] = export_family_text_encoder(encoder, spec, plan.encoder, source.class_name,
                                                           source.tokenizer_dir, out_dir, tolerance, opset)
    return records, t5_len


def text_tokens(parts: TransformerParts, records: dict[str, Any], t5_len: int) -> int | None:
    """The denoiser's text tokens: SD3 CLIP + T5 (T5's count even when the folder has no T5: zeros stand in)."""
    if parts.kind == "dit":
        return None
    if parts.kind == "sd3":
        return int(next(r["sequence_length"] for r in records.values() if r["kind"] == "clip")) + t5_len
    return t5_len


def export_transformer_pipeline(pipe: PipelineSource | None, family: Family, transformer: Any, vae_dir: Path,
                                out_dir: Path, cond_len: int | None, tolerance: float,
                                opset: int = DEFAULT_OPSET) -> TransformerExport:
    """Text encoders (``pipe``: None for DiT), the denoiser ``transformer`` (loaded, FP32) and the VAE decoder of
    ``vae_dir`` into ``out_dir``, each verified (CheckFailed over ``tolerance``)."""
    parts = family.transformer
    assert parts is not None, f"{family.name} is not a transformer family"
    records: dict[str, Any] = {}
    t5_len = 0
    if pipe is not None:
        records, t5_len = export_text_encoders(pipe, parts, out_dir, cond_len, tolerance, opset)
    from common.jsonfile import read_json

    vae_cfg = read_json(Path(vae_dir) / "config.json")
    if vae_cfg is None:
        raise UserError(f"'{vae_dir}' has no config.json: the pipeline's VAE is needed to decode latents")
    channels, hw, scale = latent_size(transformer, vae_cfg)
    sig = denoiser_signature(parts.kind, transformer, hw, text_tokens(parts, records, t5_len), vae_scale=scale)
    print(f"  {family.denoiser_folder} ({type(transformer).__name__}, latents {channels}×{hw[0]}×{hw[1]}) ...")
    denoiser = _export_denoiser(transformer, sig, out_dir, tolerance, opset)
    records[VAE_DECODER] = export_vae_decoder(Path(vae_dir), (channels, *hw), out_dir, tolerance, opset)
    t2i = None
    if pipe is not None:
        t2i = {"pipeline_class": pipe.class_name, "model_dir": str(pipe.root.resolve()),
               "text_encoders": [n for n in records if n != VAE_DECODER], "vae_decoder": VAE_DECODER,
               "force_zeros_for_empty_prompt": pipe.force_zeros_for_empty_prompt, "image_size": list(sig.image_size),
               "t5_length": t5_len}
    return TransformerExport(denoiser, records, t2i)


def _export_denoiser(transformer: Any, sig: DenoiserSignature, out_dir: Path, tolerance: float,
                     opset: int) -> dict[str, Any]:
    path = out_dir / "model.onnx"
    outcome = export_denoiser(transformer, sig, path, opset)
    steps = default_timesteps(1000)
    check = verify_denoiser(transformer, path, sig, steps, tolerance)
    print(f"  ONNX vs PyTorch at t={[int(t) for t in steps]}: max relative error {check.max_rel_error:.2e} "
          f"(tolerance {tolerance:g}; {outcome.exporter} exporter)")
    if not check.ok:
        raise CheckFailed(f"model.onnx differs from PyTorch: max relative error {check.max_rel_error:.2e} > "
                          f"tolerance {tolerance:g}; nothing written")
    return {
        "onnx": {"file": path.name, "external_data": (path.name + ".data") if outcome.external_data else None,
                 "sha256": onnx_model_sha256(path), **outcome.to_json()},
        "denoiser_kind": sig.kind,
        **sig.to_json(),
        "dynamic_axes": {s.name: {"0": "batch"} for s in (*sig.inputs, sig.output) if s.batched},
        "verification": check.to_json(),
        "latent_size": list(sig.latent_size),
        "num_classes": sig.num_classes,
        "output_name": OUTPUT,
    }
