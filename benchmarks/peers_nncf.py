"""NNCF as a peer: ``nncf.quantize`` on our FP32 ``model.onnx`` (what optimum-intel runs for OpenVINO INT8).

The calibration dataset is our calibration store's samples (calibrators/calib_store.py, the default calibration's
cached UNet inputs) as feed dicts, every one used (``subset_size`` = their number). Presets (``PRESETS``): NNCF's
defaults (``QuantizationPreset.PERFORMANCE``: symmetric INT8, per-channel weights, MinMax with bias correction), and
``ModelType.TRANSFORMER`` (mixed preset, SmoothQuant on MatMul inputs, attention-score MatMuls left float). The one
Q/DQ ONNX model each preset writes runs on OpenVINO and on ONNX Runtime.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: row label -> whether ``model_type=nncf.ModelType.TRANSFORMER`` is set
PRESETS = {"default preset": False, "ModelType.TRANSFORMER (SmoothQuant)": True}


def nncf_quantize(model: Path, feeds: list[dict[str, Any]], out: Path, transformer: bool) -> Path:
    """``nncf.quantize`` of the ONNX file ``model`` on ``feeds`` (one dict of UNet inputs per item), saved to ``out``."""
    import nncf
    import onnx

    kwargs: dict[str, Any] = {"subset_size": len(feeds)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    quantized = nncf.quantize(onnx.load(str(model)), nncf.Dataset(feeds), **kwargs)
    onnx.save(quantized, str(out))
    return out


def nncf_built(subject: Any, samples: list[Any], out_dir: Path) -> Iterator[Any]:
    """Per preset: the row on OpenVINO and the row on ONNX Runtime (benchmarks.peers.Built)."""
    import nncf

    from benchmarks.peers import Built
    from calibrators.graph_taps import sample_feeds
    from engines.openvino_session import CACHE_FOLDER, OpenVinoSession
    from engines.ort_session import OrtSession

    feeds = [sample_feeds(s) for s in samples]
    package = f"nncf {nncf.__version__}"
    cache = subject.work.root / CACHE_FOLDER
    for label, transformer in PRESETS.items():
        out = out_dir / f"nncf_{'transformer' if transformer else 'default'}.onnx"
        start = time.perf_counter()
        nncf_quantize(subject.work.model, feeds, out, transformer)
        seconds = time.perf_counter() - start
        threads = subject.threads
        yield Built(f"NNCF {label}, OpenVINO", package, seconds,
                    lambda p=out: OpenVinoSession(p, threads=threads, cache_dir=cache))
        yield Built(f"NNCF {label}, ONNX Runtime", package, seconds, lambda p=out: OrtSession(p, threads=threads))
