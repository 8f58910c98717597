"""Weight memory of each quantization variant: bytes of the initializers of the Q/DQ model the rewrite writes.

    python -m benchmarks.weight_memory [--sources digits ddpm-cifar10 sd15-unet]

Memory does not depend on activation ranges, so every activation gets amax 1.0 here (the models are measured, not
run); each source is exported once into work/memory-<name> (SD 1.5: 3.4 GB FP32, random weights) and measured in
its own process so peak memory stays that of one model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section

SOURCES = {"digits": ["--model", str(REPO / "models" / "digits-ddpm")], "ddpm-cifar10": ["--arch", "ddpm-cifar10"],
           "sd15-unet": ["--arch", "sd15-unet"]}
VARIANTS = {
    "W8A8": {},
    "INT8 conv + INT4 linear": {"weight_bits": 4, "int4_scope": "linear"},
    "W4A8 (4-bit conv values in INT8 storage)": {"weight_bits": 4, "int4_scope": "all"},
}


def unit_ranges(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    """TensorRanges with amax 1.0 for every tensor a rule may quantize (memory only: the values do not matter)."""
    from calibrators.aggregation import AggregationConfig
    from calibrators.estimators import EstimatorConfig
    from calibrators.ranges import CalibrationSettings, TensorRanges
    from exporter.shortcut_split import split_shortcuts
    from quantization.qdq_rules import calibration_tensors

    tensors = set(calibration_tensors(model)) | set(calibration_tensors(split_shortcuts(model)))
    settings = CalibrationSettings(method="none", params={}, estimator=EstimatorConfig("max"),
                                   aggregation=AggregationConfig("global"), seed=0, num_bins=2048)
    return TensorRanges(model_sha256="0" * 64, settings=settings, amax={t: 1.0 for t in sorted(tensors)})


def measure(work: Path) -> dict[str, object]:
    """Weight memory of the FP32 model and of each variant; parameter counts of Conv vs MatMul/Gemm weights."""
    from quantization.quantize import quantize
    from quantization.qdq_policy import QDQPolicy
    from quantization.weight_memory import weight_memory

    model = onnx.load(str(work / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    params = {"conv": 0, "linear": 0}
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            kind = "conv" if node.op_type == "Conv" else "linear"
            params[kind] += int(np.prod(inits[node.input[1]].dims))
    ranges = unit_ranges(model)
    out: dict[str, object] = {"params": params, "FP32": weight_memory(model).total}
    for label, kwargs in VARIANTS.items():
        q = quantize(model, ranges, QDQPolicy(target="tensorrt", **kwargs))[0]  # type: ignore[arg-type]
        out[label] = weight_memory(q).total
        del q
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: measure one work folder, print JSON
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    command = command_line("benchmarks.weight_memory", argv)
    rows = []
    for name in args.sources:
        work = REPO / "work" / f"memory-{name}"
        if not (work / "export.json").is_file():
            subprocess.run([sys.executable, "-m", "tools", "export", *SOURCES[name], str(work), "--force"],
                           check=True, cwd=REPO)
        result = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.weight_memory", "--measure", str(work)],
                                           check=True, cwd=REPO, capture_output=True, text=True).stdout.splitlines()[-1])
        params = result["params"]
        share = params["linear"] / max(1, params["conv"] + params["linear"])
        base = result["W8A8"]
        for label in ["FP32", *VARIANTS]:
            size = result[label]
            rows.append([name, f"{(params['conv'] + params['linear']) / 1e6:.1f}", f"{100 * share:.0f}%", label,
                         f"{size / 2**20:.2f}", f"{100 * (1 - size / base):+.1f}%" if label != "FP32" else ""])
            print(rows[-1], flush=True)
    body = "\n".join([
        *section_head("Weight memory of the quantization variants", command),
        "- MiB of initializers of the Q/DQ model (`quantization/weight_memory.py`: INT4 packed two per byte; scales, "
        "float biases and float layers included), `tensorrt` target. Activation ranges do not change memory: every "
        "activation gets amax 1.0 here. Linear share: MatMul/Gemm weights among all Conv/MatMul/Gemm weights. "
        "Saving: relative to W8A8 (negative = larger).",
        "",
        markdown_table(["model", "weighted params (M)", "linear share", "variant", "weight MiB", "saving vs W8A8"],
                       rows),
    ])
    write_section("weight-memory", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
