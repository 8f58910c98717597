"""A Polygraphy ``TrtRunner`` on an engine this project built (its ``.plan.json`` is checked first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.trt_plan import current_gpu, load_checked, require_tensorrt


def trt_runner(plan: Path, name: str = "quantized") -> Any:
    """TrtRunner(EngineFromBytes(BytesFromPath(plan))) after checking TensorRT version, GPU and source ONNX."""
    trt = require_tensorrt()
    load_checked(plan, trt.__version__, current_gpu())
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(plan))), name=name)
