"""Expose chosen intermediate tensors of an ONNX model as outputs and stream them, per sample, to a collector."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from calibrators.sample import CalibSample
from engines.ort_session import OrtSession


def augment_with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``tensors`` (types left open; ONNX Runtime infers them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in existing:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


@contextlib.contextmanager
def tapped_session(model: onnx.ModelProto, tensors: list[str], scratch_dir: Path, threads: int = 0
                   ) -> Iterator[OrtSession]:
    """An OrtSession on ``model`` augmented to output ``tensors``.

    The augmented model is written to a temporary folder inside ``scratch_dir`` (the work folder, so a multi-GB
    model stays on the same disk; weights as external data above 2 GB) and removed when the block ends.
    """
    from exporter.onnx_export import save_model

    augmented = augment_with_outputs(model, tensors)
    with tempfile.TemporaryDirectory(prefix=".tapped.", dir=scratch_dir) as tmp:
        path = Path(tmp) / "tapped.onnx"
        save_model(augmented, path)
        del augmented
        with OrtSession(path, threads=threads) as sess:
            yield sess


def sample_feeds(sample: CalibSample) -> dict[str, np.ndarray]:
    """UNet feeds for one calibration sample: x (B×C×H×W), t broadcast to B, every conditioning input it carries
    (``encoder_hidden_states``; SDXL's ``text_embeds`` and ``time_ids``)."""
    x = np.ascontiguousarray(sample.x, dtype=np.float32)
    feeds = {"sample": x, "timestep": np.full((x.shape[0],), float(sample.t), dtype=np.float32)}
    feeds.update(sample.conditioning_feeds())
    return feeds


def batch_samples(samples: list[CalibSample], max_rows: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Group consecutive samples into feeds of at most ``max_rows`` rows; yields (feeds, per-row time steps)."""
    i = 0
    while i < len(samples):
        group = [samples[i]]
        rows = samples[i].x.shape[0]
        while i + len(group) < len(samples) and rows + samples[i + len(group)].x.shape[0] <= max_rows:
            rows += samples[i + len(group)].x.shape[0]
            group.append(samples[i + len(group)])
        feeds = [sample_feeds(s) for s in group]
        merged = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        yield merged, merged["timestep"].astype(np.int64)
        i += len(group)
