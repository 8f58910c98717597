"""UNet step latency of several ONNX models on ONNX Runtime, measured interleaved (one call per model per round, so
machine noise hits every model alike); medians in milliseconds."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from engines.cpu_backend import cpu_session


def unet_feeds(info: dict[str, Any], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random UNet inputs of ``batch`` rows shaped as export.json's ``inputs`` say (time step 500)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, spec in info["inputs"].items():
        shape = [batch if not isinstance(d, int) else d for d in spec["shape"]]
        if name == "timestep":
            feeds[name] = np.full(shape, 500.0, np.float32)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def step_latency_ms(models: dict[str, Path], info: dict[str, Any], batches: list[int], repeats: int = 5,
                    threads: int = 0, backend: str = "ort", cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows ``{"backend": label, "batch": B, "ms": median ms per UNet call}`` for every model and batch, on the CPU
    ``backend`` (``ort`` or ``openvino``; OpenVINO's compiled models cached in ``cache_dir``). Each model runs
    alone, time-step group graphs beside it or not (the feeds hold one time step)."""
    rows = []
    sessions = {label: cpu_session(path, backend, threads, cache_dir, groups=False).activate()
                for label, path in models.items()}
    try:
        for batch in batches:
            feeds = unet_feeds(info, batch)
            times: dict[str, list[float]] = {label: [] for label in sessions}
            for s in sessions.values():
                s.run(feeds)  # warm-up
            for _ in range(repeats):
                for label, s in sessions.items():
                    start = time.perf_counter()
                    s.run(feeds)
                    times[label].append(time.perf_counter() - start)
            rows += [{"backend": label, "batch": batch, "ms": round(1000 * statistics.median(t), 3)}
                     for label, t in times.items()]
    finally:
        for s in sessions.values():
            s.deactivate()
    return rows
