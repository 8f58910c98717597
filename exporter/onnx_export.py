"""Export a diffusers UNet (PyTorch) to ONNX: fixed I/O names, dynamic batch, external data above 2 GB.

The same export path (``export_module``) serves the other pipeline components (exporter/components.py).

Opset 17 is the default: it is the newest opset that every TensorRT our users deploy on parses (TensorRT 8.5 on
JetPack 5 stops at 17; 8.6, 10.x and 11 accept it), ONNX Runtime runs it completely, and it already has per-channel
Q/DQ (opset 13). Graph rewrites that need newer operators (blocked INT4 DequantizeLinear, opset 21) raise the opset
of the rewritten model only.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.lazy import lazy_import

DEFAULT_OPSET = 17
TWO_GB = 2**31
INPUT_SAMPLE = "sample"
INPUT_TIMESTEP = "timestep"
INPUT_COND = "encoder_hidden_states"
OUTPUT = "out"
# SDXL's added conditions (UNet config addition_embed_type "text_time"): pooled text embedding and six size ids.
INPUT_TEXT_EMBEDS = "text_embeds"
INPUT_TIME_IDS = "time_ids"
TIME_IDS_LEN = 6  # original (H, W), crop top-left (y, x), target (H, W), in image pixels


@dataclass(frozen=True)
class ExportShapes:
    """Shapes of one UNet call. sample: B×C×H×W float32; timestep: B float32 (diffusion step, 0..T-1);
    encoder_hidden_states: B×L×D float32 for conditional models; SDXL-type UNets also take text_embeds B×P (the
    pooled text embedding) and time_ids B×6 (``pooled_dim`` = P)."""

    channels: int
    height: int
    width: int
    cond_len: int | None = None
    cond_dim: int | None = None
    pooled_dim: int | None = None

    @property
    def conditional(self) -> bool:
        return self.cond_dim is not None

    @property
    def added_conditions(self) -> bool:
        return self.pooled_dim is not None

    def input_names(self) -> list[str]:
        added = [INPUT_TEXT_EMBEDS, INPUT_TIME_IDS] if self.added_conditions else []
        return [INPUT_SAMPLE, INPUT_TIMESTEP] + ([INPUT_COND] if self.conditional else []) + added

    def input_shapes(self, batch: int | str) -> dict[str, list[int | str]]:
        shapes: dict[str, list[int | str]] = {
            INPUT_SAMPLE: [batch, self.channels, self.height, self.width],
            INPUT_TIMESTEP: [batch],
        }
        if self.conditional:
            assert self.cond_len is not None and self.cond_dim is not None
            shapes[INPUT_COND] = [batch, self.cond_len, self.cond_dim]
        if self.added_conditions:
            assert self.pooled_dim is not None
            shapes[INPUT_TEXT_EMBEDS] = [batch, self.pooled_dim]
            shapes[INPUT_TIME_IDS] = [batch, TIME_IDS_LEN]
        return shapes


def shapes_for(unet: Any, cond_len: int = 77) -> ExportShapes:
    """Export shapes from a diffusers UNet's config (square ``sample_size``)."""
    cfg = unet.config
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    cross = getattr(cfg, "cross_attention_dim", None)
    if cross is not None:  # a text-conditional UNet (UNet2DConditionModel); a pixel UNet2DModel has no such field
        pooled = None
        if getattr(cfg, "addition_embed_type", None) == "text_time":
            pooled = int(cfg.projection_class_embeddings_input_dim) - TIME_IDS_LEN * int(cfg.addition_time_embed_dim)
        return ExportShapes(cfg.in_channels, h, w, cond_len, int(cross), pooled)
    return ExportShapes(cfg.in_channels, h, w)


def unet_for_onnx(unet: Any, shapes: ExportShapes) -> Any:
    """``unet`` with a plain-tensor signature: (sample, timestep[, encoder_hidden_states[, text_embeds, time_ids]])
    -> out, the ONNX graph's inputs in order."""
    torch = lazy_import("torch")
    conditional, added = shapes.conditional, shapes.added_conditions

    class UNetForOnnx(torch.nn.Module):  # type: ignore[misc, name-defined]
        """Plain-tensor signature: (sample, timestep[, encoder_hidden_states[, text_embeds, time_ids]]) -> out."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any = None, text_embeds: Any = None,
                    time_ids: Any = None) -> Any:
            if added:
                extra = {"text_embeds": text_embeds, "time_ids": time_ids}
                return self.inner(sample, timestep, encoder_hidden_states, added_cond_kwargs=extra,
                                  return_dict=False)[0]
            if conditional:
                return self.inner(sample, timestep, encoder_hidden_states, return_dict=False)[0]
            return self.inner(sample, timestep, return_dict=False)[0]

    return UNetForOnnx(unet).eval()


def example_inputs(shapes: ExportShapes, batch: int, timesteps: list[float], seed: int) -> dict[str, Any]:
    """Random float32 inputs (numpy) for one call: N(0,1) sample and conditioning, the given time steps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    concrete = shapes.input_shapes(batch)
    feeds: dict[str, Any] = {INPUT_SAMPLE: rng.standard_normal(concrete[INPUT_SAMPLE]).astype(np.float32)}  # type: ignore[arg-type]
    feeds[INPUT_TIMESTEP] = np.asarray(timesteps, dtype=np.float32)
    if shapes.conditional:
        feeds[INPUT_COND] = rng.standard_normal(concrete[INPUT_COND]).astype(np.float32)  # type: ignore[arg-type]
    if shapes.added_conditions:
        feeds[INPUT_TEXT_EMBEDS] = rng.standard_normal(concrete[INPUT_TEXT_EMBEDS]).astype(np.float32)  # type: ignore[arg-type]
        # sizes in pixels as SDXL passes them: (H, W, top, left, H, W)
        feeds[INPUT_TIME_IDS] = rng.integers(0, 1024, concrete[INPUT_TIME_IDS]).astype(np.float32)  # type: ignore[arg-type]
    return feeds


def export_unet(unet: Any, shapes: ExportShapes, out_path: Path, opset: int = DEFAULT_OPSET) -> bool:
    """Export ``unet`` to ``out_path`` (a file in an empty temporary folder). Returns True if external data was used.

    The exported graph is constant-folded and cleaned with onnx-graphsurgeon, then checked with ``onnx.checker``.
    Models above 2 GB get one external-data file ``<name>.data`` beside the ``.onnx``.
    """
    torch = lazy_import("torch")
    feeds = example_inputs(shapes, batch=2, timesteps=[1.0, 500.0], seed=0)
    args = tuple(torch.from_numpy(feeds[n]) for n in shapes.input_names())
    dynamic = {n: {0: "batch"} for n in shapes.input_names() + [OUTPUT]}
    return export_module(unet_for_onnx(unet, shapes), args, shapes.input_names(), [OUTPUT], dynamic, out_path, opset)


def export_module(module: Any, args: tuple[Any, ...], input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], out_path: Path, opset: int = DEFAULT_OPSET) -> bool:
    """Trace ``module(*args)`` to ``out_path`` (a file in a folder of its own), fold constants, clean, check.
    Returns True when the weights went to external data (``<name>.data``, models above 2 GB)."""
    torch = lazy_import("torch")
    import onnx

    out_path = Path(out_path)
    raw_dir = out_path.parent / f"raw-{out_path.stem}"
    raw_dir.mkdir()
    raw = raw_dir / "raw.onnx"
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
        torch.onnx.export(
            module,
            args,
            str(raw),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    gc.collect()
    large = n_bytes >= TWO_GB - (64 << 20)
    model = onnx.load(str(raw), load_external_data=True)
    model = simplify(model)
    model.producer_name = "qdiff-trt exporter"
    save_model(model, out_path, external=large)
    del model
    for p in raw_dir.iterdir():
        p.unlink()
    raw_dir.rmdir()
    onnx.checker.check_model(str(out_path))
    return large


def simplify(model: Any) -> Any:
    """Fold constants (shape arithmetic of the dynamic batch stays), drop dead nodes, sort topologically."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.fold_constants(size_threshold=None).cleanup().toposort()
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=DEFAULT_OPSET)
    out = gs.export_onnx(graph, do_type_check=True)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    out.producer_name = model.producer_name
    return out


def save_model(model: Any, path: Path, external: bool | None = None) -> None:
    """Save ``model``; with ``external`` (default: when larger than 2 GB) all weights go to ``<name>.data``."""
    import onnx

    path = Path(path)
    if external is None:
        external = model.ByteSize() >= TWO_GB - (64 << 20) if _fits_protobuf(model) else True
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def _fits_protobuf(model: Any) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size messages above 2 GB
        return False
