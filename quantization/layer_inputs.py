"""Capture, per quantized layer, rows of the input it multiplies: streamed from the FP32 ONNX model over calibration
samples, tapped in memory-budgeted passes, reduced at once to a few random rows per sample.

A Conv input becomes im2col patches (``torch.nn.functional.unfold``: one row per output position, K = Cin·kh·kw in
the order of ``weight.reshape(Cout, -1)``); a linear input becomes its last-axis vectors. Each layer keeps
``rows_per_sample`` rows of every sample, so memory is rows × K × 4 bytes per layer, independent of resolution.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import onnx

from calibrators.calibrate import tap_groups
from calibrators.graph_taps import batch_samples, tapped_session
from calibrators.sample import CalibSample
from common.lazy import lazy_import
from quantization.weight_layers import ConvGeometry, WeightedLayer


def layer_rng(seed: int, node: str) -> np.random.Generator:
    """The row-sampling generator of one layer: fixed by the seed and the node name (not by pass or order)."""
    return np.random.default_rng([seed, zlib.crc32(node.encode())])


def conv_rows(x: np.ndarray, geometry: ConvGeometry, rows_per_sample: int, rng: np.random.Generator) -> np.ndarray:
    """``rows_per_sample`` random im2col rows of each batch item of ``x`` (B×C×H×W) -> (B·r)×(C·kh·kw) float32."""
    torch = lazy_import("torch")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    top, left, bottom, right = geometry.pads
    if (top, left) != (bottom, right):
        t = torch.nn.functional.pad(t, (left, right, top, bottom))
        padding = (0, 0)
    else:
        padding = (top, left)
    cols = torch.nn.functional.unfold(t, geometry.kernel, dilation=geometry.dilations, padding=padding,
                                      stride=geometry.strides)  # B × K × L
    b, _, positions = cols.shape
    r = min(rows_per_sample, positions)
    idx = np.stack([rng.choice(positions, size=r, replace=False) for _ in range(b)])
    picked = torch.gather(cols, 2, torch.from_numpy(idx)[:, None, :].expand(-1, cols.shape[1], -1))
    return picked.permute(0, 2, 1).reshape(b * r, -1).numpy().copy()


def linear_rows(x: np.ndarray, rows_per_sample: int, rng: np.random.Generator) -> np.ndarray:
    """``rows_per_sample`` random last-axis vectors of each batch item of ``x`` (B×…×K) -> rows×K float32."""
    x = np.asarray(x, dtype=np.float32)
    per_item = x.reshape(x.shape[0], -1, x.shape[-1])
    n = per_item.shape[1]
    r = min(rows_per_sample, n)
    return np.concatenate([item[rng.choice(n, size=r, replace=False)] for item in per_item])


def capture_layer_inputs(model: onnx.ModelProto, scratch_dir: Path, samples: list[CalibSample],
                         layers: list[WeightedLayer], rows_per_sample: int, seed: int, batch_rows: int = 32,
                         budget_gb: float = 4.0, threads: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """node -> rows×K float32 inputs of that layer (FP32 model, every sample, ``rows_per_sample`` rows each)."""
    from tqdm import tqdm

    tensors = sorted({layer.input for layer in layers})
    readers: dict[str, list[WeightedLayer]] = {}
    for layer in layers:
        readers.setdefault(layer.input, []).append(layer)
    rngs = {layer.node: layer_rng(seed, layer.node) for layer in layers}
    parts: dict[str, list[np.ndarray]] = {layer.node: [] for layer in layers}
    groups = tap_groups(model, tensors, batch_rows, int(budget_gb * 2**30))
    bar = tqdm(total=len(samples) * len(groups), desc=f"layer inputs ({len(groups)} pass(es))", file=sys.stderr,
               disable=not progress, mininterval=2)
    for names in groups:
        with tapped_session(model, names, scratch_dir, threads=threads) as sess:
            for feeds, _ in batch_samples(samples, batch_rows):
                outs = sess.run(feeds)
                for name in names:
                    x = outs.pop(name)
                    for layer in readers[name]:
                        rng = rngs[layer.node]
                        rows = (conv_rows(x, layer.conv, rows_per_sample, rng) if layer.conv is not None
                                else linear_rows(x, rows_per_sample, rng))
                        parts[layer.node].append(rows)
                del outs
                bar.update(len(feeds["sample"]) // samples[0].x.shape[0])
    bar.close()
    return {node: np.concatenate(p) for node, p in parts.items()}
