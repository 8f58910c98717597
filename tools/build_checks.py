"""Checks ``python -m tools build --precision int8`` runs before TensorRT sees a Q/DQ graph (exit 2, one line).

A Q/DQ graph is written for one target: ``onnxruntime`` (UINT8 activations with zero point 128, INT32 bias
dequantization, output Q/DQ for QLinearConv) or ``tensorrt`` (TensorRT's placement and types). TensorRT rejects or
mis-builds the former. ``build`` takes ``model.int8.trt.onnx`` (``engines.tensorrt.build.source_onnx``; with only an
``onnxruntime`` graph in the folder that already fails, naming ``quantize --target tensorrt``); here it refuses a
graph whose quantize record (``QuantizeRecord``) names another target, then runs the TensorRT lint
(``quantization.trt_lint``) on it: each says which ``quantize --target`` to run.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from common.errors import UserError
from common.workdir import WorkDir
from quantization.record import QuantizeRecord
from quantization.trt_lint import lint_model


def recorded_target(work: WorkDir, model: Path) -> tuple[str | None, Path]:
    """The ``--target`` that the quantize record beside ``model`` names (None without a record), and its path."""
    path = work.quantize_record(model)
    return (QuantizeRecord.load(path).target if path.is_file() else None), path


def check_int8_source(work: WorkDir, source: Path, fmt: str = "int8") -> None:
    """UserError unless ``source`` is a tensorrt-target Q/DQ graph (of format ``fmt``, int8 or fp8) that passes the
    TensorRT lint."""
    fix = f"run python -m tools quantize {work.root} --target tensorrt" + (" --format fp8" if fmt == "fp8" else "")
    target, record = recorded_target(work, source)
    recorded_format = QuantizeRecord.load(record).policy.format if record.is_file() else fmt
    if recorded_format != fmt:
        raise UserError(f"'{source.name}' was quantized as {recorded_format} ({record.name}), not {fmt}: {fix}")
    if target is not None and target != "tensorrt":
        raise UserError(f"'{source.name}' was quantized for --target {target} ({record.name}); TensorRT needs a "
                        f"tensorrt-target graph: {fix}")
    model = onnx.load(str(source), load_external_data=False)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        onnx.load_external_data_for_model(model, str(source.parent))
    violations = lint_model(model, allow_int32_bias=False)
    if violations:
        raise UserError(f"'{source.name}' breaks {len(violations)} of TensorRT's Q/DQ rules (first: {violations[0]}; "
                        f"python -m tools lint {source} lists them): {fix}")
