"""Export a module with the TorchScript exporter and, where that one cannot, with the dynamo exporter.

The TorchScript (legacy) exporter stays the first choice: it is what every UNet was exported with, and it writes the
graphs our Q/DQ rules were written against. It has no symbolic for ``aten::rms_norm`` (FLUX's RMSNorm; ModelOpt
issue 262), so a module it refuses goes to ``torch.onnx.export(..., dynamo=True)``. The dynamo graph is then repaired
(exporter/onnx_fixes.py: node names from module scopes, no-op Squeezes, float64 tensors; for both exporters, shape-dependent branches), folded and cleaned like the legacy one, and saved with
external data above 2 GB, at opset 18 at least (the lowest it writes; TensorRT 10.x parses it, TensorRT 8.5 on
JetPack 5 does not). ``ExportOutcome.exporter`` says which exporter wrote the file; export.json records it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.lazy import lazy_import
from common.protobuf import PROTOBUF_LIMIT
from exporter.onnx_export import DEFAULT_OPSET, export_module, save_model, simplify
from exporter.onnx_fixes import demote_float64, drop_noop_squeezes, fold_shape_branches, name_nodes_by_scope

DYNAMO_MIN_OPSET = 18  # the dynamo exporter writes opset-18 operators (Split's num_outputs); it does not go lower
LEGACY = "torchscript"
DYNAMO = "dynamo"
EXPORTERS = (LEGACY, DYNAMO)


@dataclass(frozen=True)
class ExportOutcome:
    """Which exporter wrote the file, whether its weights went to external data, what the repairs changed, and why
    the legacy exporter was not used (its error's first line; "" when it was)."""

    exporter: str
    external_data: bool
    noop_squeezes: int = 0
    float64_demoted: int = 0
    shape_branches: int = 0
    legacy_error: str = ""
    opset: int = DEFAULT_OPSET

    def to_json(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "opset": self.opset, "noop_squeezes_removed": self.noop_squeezes,
                "float64_tensors_demoted": self.float64_demoted,
                "shape_branches_folded": self.shape_branches, "legacy_error": self.legacy_error or None}


def export_with_fallback(module: Any, args: tuple[Any, ...], input_names: list[str], output_names: list[str],
                         dynamic_axes: dict[str, dict[int, str]], out_path: Path, opset: int = DEFAULT_OPSET,
                         exporter: str | None = None) -> ExportOutcome:
    """``module(*args)`` to ``out_path`` (a file in a folder of its own): the legacy exporter, or the dynamo one
    where the legacy one fails (``exporter`` forces one of ``EXPORTERS``). Batch is dynamic on ``dynamic_axes``
    (axis 0 only)."""
    if exporter not in (None, *EXPORTERS):
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    error = ""
    if exporter in (None, LEGACY):
        try:
            with _quiet():  # a refusing legacy exporter prints its whole TorchScript graph
                large = export_module(module, args, input_names, output_names, dynamic_axes, out_path, opset)
        except Exception as exc:  # the legacy exporter raises several types for an operator it lacks
            if exporter == LEGACY:
                raise
            text = str(exc).strip()
            error = text.splitlines()[0][:300] if text else type(exc).__name__
            shutil.rmtree(Path(out_path).parent / f"raw-{Path(out_path).stem}", ignore_errors=True)
        else:
            return ExportOutcome(LEGACY, large, shape_branches=fold_shape_branches(Path(out_path), large),
                                 opset=onnx_opset(Path(out_path)))
    return export_dynamo(module, args, input_names, output_names, dynamic_axes, out_path, opset, error)


def export_dynamo(module: Any, args: tuple[Any, ...], input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], out_path: Path, opset: int = DEFAULT_OPSET,
                  legacy_error: str = "") -> ExportOutcome:
    """``torch.onnx.export(..., dynamo=True)``, repaired, folded, cleaned, checked (see the module docstring)."""
    torch = lazy_import("torch")
    import onnx

    out_path = Path(out_path)
    large = sum(p.numel() * p.element_size() for p in module.parameters()) >= PROTOBUF_LIMIT
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    shapes = tuple({0: batch} if 0 in dynamic_axes.get(name, {}) else None for name in input_names)
    with tempfile.TemporaryDirectory(prefix=f"raw-{out_path.stem}-", dir=out_path.parent) as scratch:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, None, input_names=input_names, output_names=output_names,
                                        dynamic_shapes=_for_signature(module, shapes),
                                        opset_version=max(opset, DYNAMO_MIN_OPSET), dynamo=True, optimize=True,
                                        verbose=False)
            program.save(str(Path(scratch) / "raw.onnx"), external_data=large)
        del program
        gc.collect()
        model = onnx.load(str(Path(scratch) / "raw.onnx"), load_external_data=True)
    name_nodes_by_scope(model)
    squeezes = drop_noop_squeezes(model)
    demoted = demote_float64(model)
    model = simplify(model)
    model.producer_name = "qdiff-trt exporter (dynamo)"
    save_model(model, out_path, external=large)
    del model
    branches = fold_shape_branches(out_path, large)
    onnx.checker.check_model(str(out_path))
    return ExportOutcome(DYNAMO, large, squeezes, demoted, branches, legacy_error, onnx_opset(out_path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Send what Python and C++ code write to stdout and stderr (file descriptors 1, 2) to a scratch file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def onnx_opset(path: Path) -> int:
    """The default-domain opset of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=DEFAULT_OPSET)


def _for_signature(module: Any, shapes: tuple[Any, ...]) -> tuple[Any, ...]:
    """``dynamic_shapes`` in the structure of ``module.forward``'s parameters: one entry per positional parameter,
    or one tuple for a ``forward(*args)``."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (shapes,)
    return shapes
