"""Checks ``python -m tools build --precision int8`` runs before TensorRT sees a Q/DQ graph (exit 2, one line).

A Q/DQ graph is written for one target: ``onnxruntime`` (UINT8 activations with zero point 128, INT32 bias
dequantization, output Q/DQ for QLinearConv) or ``tensorrt`` (TensorRT's placement and types). TensorRT rejects or
mis-builds the former, so ``build`` refuses a graph whose ``quantize.json`` names another target, then runs the
TensorRT lint (``exporter.trt_lint``) on it: each says which ``quantize --target`` to run.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from common.errors import UserError
from common.workdir import WorkDir
from exporter.trt_lint import lint_model


def recorded_target(work: WorkDir) -> str | None:
    """The ``--target`` recorded in ``quantize.json`` (None when there is no record or it names none)."""
    path = work.quantize_json
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read '{path}': {exc}") from exc
    target = record.get("target") or (record.get("policy") or {}).get("target")
    return str(target) if target else None


def check_int8_source(work: WorkDir, source: Path) -> None:
    """UserError unless ``source`` is a tensorrt-target Q/DQ graph that passes the TensorRT lint."""
    fix = f"run python -m tools quantize {work.root} --target tensorrt"
    target = recorded_target(work)
    if target is not None and target != "tensorrt":
        raise UserError(f"'{source.name}' was quantized for --target {target} (quantize.json); TensorRT needs a "
                        f"tensorrt-target graph: {fix}")
    model = onnx.load(str(source), load_external_data=False)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        onnx.load_external_data_for_model(model, str(source.parent))
    violations = lint_model(model, allow_int32_bias=False)
    if violations:
        raise UserError(f"'{source.name}' breaks {len(violations)} of TensorRT's Q/DQ rules (first: {violations[0]}; "
                        f"python -m tools lint {source} lists them): {fix}")
