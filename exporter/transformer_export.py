"""Transformer denoisers (SD3 MMDiT, FLUX, PixArt, DiT) with plain-tensor signatures, exported to ONNX and checked.

One wrapper per denoiser kind, as TensorRT's demo/Diffusion ``models.py`` has one class per component kind. Every
graph takes the latents as ``sample`` and the scheduler's own time step as ``timestep`` (B float32), and returns
``out``, as the UNet graphs do, so calibration, quantization and validation read every denoiser alike. The rest
keeps diffusers' argument names:

| kind | further inputs (B = batch) | ``out`` |
|---|---|---|
| ``sd3`` | ``encoder_hidden_states`` B×L×joint_attention_dim (CLIP-L/G + T5 tokens), ``pooled_projections`` B×P | B×C×H×W |
| ``flux`` | ``guidance`` B (dev-type only), ``pooled_projections`` B×P, ``encoder_hidden_states`` B×L×D, ``txt_ids`` L×3, ``img_ids`` N×3 | B×N×C·4 |
| ``pixart`` | ``encoder_hidden_states`` B×L×caption_channels, ``encoder_attention_mask`` B×L (1 token, 0 padding), ``resolution`` B×2 and ``aspect_ratio`` B×1 when the model uses them | B×2C×H×W (learned sigma) |
| ``dit`` | ``class_labels`` B (the null class = ``num_embeds_ada_norm``; cast to int64 in the graph) | B×2C×H×W (learned sigma) |

FLUX's ``sample`` is the 2×2-packed latents (N = H/2·W/2 tokens of C·4 channels, ``pipelines/flux_latents.py``).
FluxPipeline calls its transformer with ``timestep / 1000`` (the transformer multiplies by 1000 again): the FLUX
wrapper divides inside the graph, so its ``timestep`` input is the scheduler's time step like every other family's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.lazy import lazy_import
from exporter.dynamo_export import ExportOutcome, export_with_fallback
from exporter.onnx_export import DEFAULT_OPSET, INPUT_SAMPLE, INPUT_TIMESTEP, OUTPUT
from exporter.verify import VerifyResult, relative_error

KINDS = ("sd3", "flux", "pixart", "dit")
FLUX_TIME_SCALE = 1000.0  # FluxPipeline passes timestep / 1000


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape ("batch" for the dynamic axis), dtype. Every denoiser input is
    float32 (PixArt's mask and DiT's labels too, so conditioning rows travel as one dtype)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == "batch"

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == "batch" else int(d) for d in self.shape)


@dataclass(frozen=True)
class DenoiserSignature:
    """The inputs and output of one exported transformer denoiser (see the module table), in graph order.
    ``image_size``: (H, W) in pixels that the shapes are for, ``latent_size`` (h, w) of the unpacked latents;
    ``num_classes``: DiT's class count (its null label)."""

    kind: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    image_size: tuple[int, int]
    latent_size: tuple[int, int]
    num_classes: int | None = None

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def spec(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def to_json(self) -> dict[str, Any]:
        """``inputs``/``outputs`` of export.json."""
        return {"inputs": {s.name: {"shape": list(s.shape), "dtype": s.dtype} for s in self.inputs},
                "outputs": {self.output.name: {"shape": list(self.output.shape), "dtype": self.output.dtype}}}


def _b(*dims: int) -> tuple[int | str, ...]:
    return ("batch", *dims)


def denoiser_signature(kind: str, transformer: Any, latent_hw: tuple[int, int], text_len: int | None = None,
                       vae_scale: int = 8) -> DenoiserSignature:
    """The signature of ``transformer`` (a diffusers model of ``kind``) for latents of ``latent_hw`` (h, w, before
    FLUX's packing) and ``text_len`` text tokens (SD3: CLIP + T5 tokens; FLUX, PixArt: T5 tokens)."""
    if kind not in KINDS:
        raise ValueError(f"unknown denoiser kind {kind!r}; known: {KINDS}")
    cfg = transformer.config
    h, w = latent_hw
    image = (h * vae_scale, w * vae_scale)
    c = int(cfg.in_channels)
    t = TensorSpec(INPUT_TIMESTEP, _b())
    if kind == "dit":
        return DenoiserSignature(kind, (TensorSpec(INPUT_SAMPLE, _b(c, h, w)), t,
                                        TensorSpec("class_labels", _b())),
                                 TensorSpec(OUTPUT, _b(int(cfg.out_channels), h, w)), image,
                                 latent_hw, int(cfg.num_embeds_ada_norm))
    assert text_len is not None, f"{kind} needs text_len"
    if kind == "sd3":
        inputs = (TensorSpec(INPUT_SAMPLE, _b(c, h, w)), t,
                  TensorSpec("encoder_hidden_states", _b(text_len, int(cfg.joint_attention_dim))),
                  TensorSpec("pooled_projections", _b(int(cfg.pooled_projection_dim))))
        return DenoiserSignature(kind, inputs, TensorSpec(OUTPUT, _b(int(cfg.out_channels), h, w)), image, latent_hw)
    if kind == "flux":
        tokens = (h // 2) * (w // 2)
        guidance = (TensorSpec("guidance", _b()),) if cfg.guidance_embeds else ()
        inputs = (TensorSpec(INPUT_SAMPLE, _b(tokens, c)), t, *guidance,
                  TensorSpec("pooled_projections", _b(int(cfg.pooled_projection_dim))),
                  TensorSpec("encoder_hidden_states", _b(text_len, int(cfg.joint_attention_dim))),
                  TensorSpec("txt_ids", (text_len, 3)), TensorSpec("img_ids", (tokens, 3)))
        out_c = int(cfg.out_channels or c)
        return DenoiserSignature(kind, inputs, TensorSpec(OUTPUT, _b(tokens, out_c)), image, latent_hw)
    added = ((TensorSpec("resolution", _b(2)), TensorSpec("aspect_ratio", _b(1)))
             if transformer.use_additional_conditions else ())
    inputs = (TensorSpec(INPUT_SAMPLE, _b(c, h, w)), t,
              TensorSpec("encoder_hidden_states", _b(text_len, int(cfg.caption_channels))),
              TensorSpec("encoder_attention_mask", _b(text_len)), *added)
    return DenoiserSignature(kind, inputs, TensorSpec(OUTPUT, _b(int(cfg.out_channels), h, w)), image, latent_hw)


def denoiser_for_onnx(transformer: Any, sig: DenoiserSignature) -> Any:
    """``transformer`` behind the plain-tensor signature ``sig`` (inputs in graph order) -> ``out``."""
    torch = lazy_import("torch")
    kind = sig.kind
    names = sig.input_names

    class DenoiserForOnnx(torch.nn.Module):  # type: ignore[misc, name-defined]
        """(sample, timestep, <the kind's inputs>) -> out; see exporter/transformer_export.py."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            a = dict(zip(names, args, strict=True))
            m = self.inner
            if kind == "sd3":
                return m(hidden_states=a["sample"], timestep=a["timestep"],
                         encoder_hidden_states=a["encoder_hidden_states"],
                         pooled_projections=a["pooled_projections"], return_dict=False)[0]
            if kind == "flux":
                return m(hidden_states=a["sample"], timestep=a["timestep"] / FLUX_TIME_SCALE,
                         guidance=a.get("guidance"), pooled_projections=a["pooled_projections"],
                         encoder_hidden_states=a["encoder_hidden_states"], txt_ids=a["txt_ids"],
                         img_ids=a["img_ids"], return_dict=False)[0]
            if kind == "pixart":
                added = {"resolution": a.get("resolution"), "aspect_ratio": a.get("aspect_ratio")}
                return m(a["sample"], encoder_hidden_states=a["encoder_hidden_states"],
                         encoder_attention_mask=a["encoder_attention_mask"], timestep=a["timestep"],
                         added_cond_kwargs=added, return_dict=False)[0]
            labels = a["class_labels"].to(torch.int64)
            return m(a["sample"], timestep=a["timestep"], class_labels=labels, return_dict=False)[0]

    return DenoiserForOnnx(transformer).eval()


def example_feeds(sig: DenoiserSignature, batch: int, timesteps: list[float], seed: int) -> dict[str, np.ndarray]:
    """Inputs of one call in graph order: N(0, 1) latents and text, the given time steps, FLUX's position ids, a
    T5 mask with padding, the image size as PixArt's resolution, random class labels (the null class included)."""
    from pipelines.flux_latents import latent_image_ids, text_ids

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in sig.inputs:
        shape = s.concrete(batch)
        if s.name == INPUT_TIMESTEP:
            feeds[s.name] = np.asarray(timesteps, np.float32)
        elif s.name == "guidance":
            feeds[s.name] = np.full(shape, 3.5, np.float32)
        elif s.name == "txt_ids":
            feeds[s.name] = text_ids(shape[0])
        elif s.name == "img_ids":
            feeds[s.name] = latent_image_ids(sig.latent_size[0] // 2, sig.latent_size[1] // 2)
        elif s.name == "encoder_attention_mask":
            lengths = rng.integers(1, shape[1] + 1, shape[0])
            feeds[s.name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(np.float32)
        elif s.name == "resolution":
            feeds[s.name] = np.tile(np.asarray(sig.image_size, np.float32), (shape[0], 1))
        elif s.name == "aspect_ratio":
            feeds[s.name] = np.full(shape, sig.image_size[0] / sig.image_size[1], np.float32)
        elif s.name == "class_labels":
            assert sig.num_classes is not None
            feeds[s.name] = rng.integers(0, sig.num_classes + 1, shape).astype(np.float32)
        else:
            feeds[s.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def export_denoiser(transformer: Any, sig: DenoiserSignature, out_path: Path, opset: int = DEFAULT_OPSET,
                    exporter: str | None = None) -> ExportOutcome:
    """Export ``transformer`` with signature ``sig`` to ``out_path`` (legacy exporter, dynamo where it fails)."""
    torch = lazy_import("torch")
    feeds = example_feeds(sig, batch=2, timesteps=[1.0, 500.0], seed=0)
    args = tuple(torch.from_numpy(feeds[n]) for n in sig.input_names)
    dynamic = {s.name: {0: "batch"} for s in (*sig.inputs, sig.output) if s.batched}
    return export_with_fallback(denoiser_for_onnx(transformer, sig), args, sig.input_names, [OUTPUT], dynamic,
                                out_path, opset, exporter)


def verify_denoiser(transformer: Any, onnx_path: Path, sig: DenoiserSignature, timesteps: list[float],
                    tolerance: float, batch: int = 2) -> VerifyResult:
    """ONNX Runtime against PyTorch on the same random inputs at each time step (max |Δ| / max |torch|)."""
    torch = lazy_import("torch")
    from engines.ort_session import OrtSession

    module = denoiser_for_onnx(transformer, sig)
    errors = []
    with OrtSession(onnx_path, providers=["CPUExecutionProvider"]) as sess:
        for i, t in enumerate(timesteps):
            feeds = example_feeds(sig, batch, [t] * batch, seed=1000 + i)
            with torch.no_grad():
                ref = module(*[torch.from_numpy(feeds[n]) for n in sig.input_names]).numpy()
            errors.append(relative_error(sess.run(feeds)[OUTPUT], ref))
    return VerifyResult(tuple(timesteps), tuple(errors), tolerance)
