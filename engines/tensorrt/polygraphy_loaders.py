"""A Polygraphy ``TrtRunner`` on an engine this project built (its ``.plan.json`` is checked first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.tensorrt.plan import current_gpu, load_checked, load_checked_group, require_tensorrt


def trt_runner(plan: Path, name: str = "quantized", group: int | None = None) -> Any:
    """TrtRunner(EngineFromBytes(BytesFromPath(engine))) after checking TensorRT version, GPU and source ONNX.
    ``group``: time-step group ``group``'s engine of the grouped build whose global engine is ``plan``
    (``load_checked_group``: also its sha256 against ``plan``'s ``.plan.json``)."""
    trt = require_tensorrt()
    if group is None:
        load_checked(plan, trt.__version__, current_gpu())
        engine = plan
    else:
        info = load_checked_group(plan, group, trt.__version__, current_gpu())
        engine = plan.parent / info.timestep_groups[group].plan
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine))), name=name)
