"""Text encoders of the transformer families, one wrapper per encoder kind, exported to ONNX and checked.

- ``clip`` (CLIPTextModel, CLIPTextModelWithProjection): ``input_ids`` B×L int64 -> ``last_hidden_state``,
  ``penultimate_hidden_state`` (``hidden_states[-2]``: SD3's CLIP-L/G input) and the pooled output: ``text_embeds``
  (the projection, SD3's pooled input) for an encoder with a projection, ``pooler_output`` (FLUX's pooled input)
  for one without.
- ``t5`` (T5EncoderModel): ``input_ids`` B×L int64 [, ``attention_mask`` B×L int64 (PixArt passes it; SD3 and FLUX
  do not)] -> ``last_hidden_state`` B×L×D.

The record written to export.json has the fields the SD/SDXL encoders' records have (file, sha256, tokenizer_dir,
sequence_length, outputs, hidden_output, pooled_output, verification), plus ``kind``, ``exporter`` and
``attention_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CheckFailed
from common.hashing import onnx_model_sha256
from common.lazy import lazy_import
from exporter.dynamo_export import export_with_fallback
from exporter.onnx_export import DEFAULT_OPSET
from exporter.verify import verify_outputs

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LAST_HIDDEN = "last_hidden_state"
PENULTIMATE_HIDDEN = "penultimate_hidden_state"
TEXT_EMBEDS = "text_embeds"  # CLIPTextModelWithProjection's projected pooled output
POOLER_OUTPUT = "pooler_output"  # CLIPTextModel's pooled output (the EOS token's final state)
ENCODER_KINDS = ("clip", "t5")


@dataclass(frozen=True)
class TextEncoderExport:
    """What a family takes from one encoder: ``kind``, its token length, the hidden output it feeds the denoiser
    and the pooled one (or None), and whether the graph takes the attention mask (PixArt's T5)."""

    kind: str
    sequence_length: int
    hidden_output: str
    pooled_output: str | None = None
    attention_mask: bool = False

    def outputs(self, encoder: Any) -> list[str]:
        """Graph outputs, in order: every hidden state the kind has and its pooled output."""
        if self.kind == "t5":
            return [LAST_HIDDEN]
        pooled = TEXT_EMBEDS if hasattr(encoder, "text_projection") else POOLER_OUTPUT
        return [LAST_HIDDEN, PENULTIMATE_HIDDEN, pooled]


def text_encoder_for_onnx(encoder: Any, spec: TextEncoderExport) -> Any:
    """``encoder`` behind a plain-tensor signature: (input_ids[, attention_mask]) -> ``spec.outputs(encoder)``."""
    torch = lazy_import("torch")
    names = spec.outputs(encoder)

    class TextEncoderForOnnx(torch.nn.Module):  # type: ignore[misc, name-defined]
        """(input_ids[, attention_mask]) -> the outputs named by TextEncoderExport.outputs."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
            if spec.kind == "t5":
                return (self.inner(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state,)
            out = self.inner(input_ids, output_hidden_states=True, return_dict=True)
            values = {LAST_HIDDEN: out.last_hidden_state, PENULTIMATE_HIDDEN: out.hidden_states[-2]}
            values[names[-1]] = getattr(out, names[-1])
            return tuple(values[n] for n in names)

    return TextEncoderForOnnx(encoder).eval()


def example_ids(encoder: Any, spec: TextEncoderExport, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random token ids (and a padded mask) of ``batch`` rows, the graph's feeds in order."""
    rng = np.random.default_rng(seed)
    feeds = {INPUT_IDS: rng.integers(0, int(encoder.config.vocab_size), (batch, spec.sequence_length))
             .astype(np.int64)}
    if spec.attention_mask:
        lengths = rng.integers(1, spec.sequence_length + 1, batch)
        feeds[ATTENTION_MASK] = (np.arange(spec.sequence_length)[None] < lengths[:, None]).astype(np.int64)
    return feeds


def export_family_text_encoder(encoder: Any, spec: TextEncoderExport, name: str, class_name: str,
                               tokenizer_dir: Path, out_dir: Path, tolerance: float,
                               opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export ``encoder`` (loaded, FP32) to ``out_dir/<name>.onnx``, check it against PyTorch; its export.json
    record. A check over ``tolerance`` raises CheckFailed."""
    torch = lazy_import("torch")
    module = text_encoder_for_onnx(encoder, spec)
    outputs = spec.outputs(encoder)
    feeds = example_ids(encoder, spec, 2, 0)
    path = out_dir / f"{name}.onnx"
    dynamic = {n: {0: "batch"} for n in [*feeds, *outputs]}
    outcome = export_with_fallback(module, tuple(torch.from_numpy(v) for v in feeds.values()), list(feeds),
                                   outputs, dynamic, path, opset)
    check = verify_outputs(module, path, example_ids(encoder, spec, 2, 1), outputs, tolerance)
    if not check["ok"]:
        raise CheckFailed(f"{path.name} differs from PyTorch: max relative error {check['max_rel_error']:.2e} > "
                          f"tolerance {tolerance:g}; nothing written")
    with torch.no_grad():
        one = module(*[torch.from_numpy(v[:1]) for v in feeds.values()])
    return {
        "file": path.name,
        "external_data": (path.name + ".data") if outcome.external_data else None,
        "sha256": onnx_model_sha256(path),
        "kind": spec.kind,
        "class": class_name,
        "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
        "sequence_length": spec.sequence_length,
        "attention_mask": spec.attention_mask,
        "inputs": {n: {"shape": ["batch", spec.sequence_length], "dtype": "int64"} for n in feeds},
        "outputs": {n: {"shape": ["batch", *[int(d) for d in o.shape[1:]]], "dtype": "float32"}
                    for n, o in zip(outputs, one, strict=True)},
        "hidden_output": spec.hidden_output,
        "pooled_output": spec.pooled_output,
        "num_parameters": sum(p.numel() for p in encoder.parameters()),
        **outcome.to_json(),
        "verification": check,
    }
