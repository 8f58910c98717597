"""``python -m tools build WORK --precision int8|fp16``: a TensorRT engine for this GPU -> WORK/model.<precision>.plan.

int8 builds the Q/DQ graph (model.int8.onnx, from ``quantize``); fp16 builds the FP32 graph (model.onnx) with its
float parts converted to FP16. The optimization profile comes from export.json (``profile`` and ``inputs``; a
conditional model's batch is doubled for classifier-free guidance); the flags override its batch range. Beside the
engine, ``model.<precision>.plan.json`` records the TensorRT version, GPU, profiles and the source ONNX's sha256.
Engines are built on the device that runs them (a datacenter GPU, or a Jetson: see README "TensorRT (GPU)").
With time-step group graphs beside the int8 source (``quantize --target tensorrt --timestep-groups K``), one more
engine per group (``model.int8.g<k>.plan``, same profile and options), all recorded in ``model.int8.plan.json``
(engines/tensorrt/groups.py); ``sample``/``validate --backend trt`` then route each step to its group's engine.
A text-to-image work folder also gets one FP16 engine per other component (text encoder(s), VAE decoder:
``<component>.fp16.plan`` + ``.plan.json``, engines/tensorrt/components.py) unless ``--unet-only``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.workdir import WorkDir
from engines.tensorrt.build import BuildOptions, profiles_from_export, source_onnx
from engines.tensorrt.groups import source_groups
from engines.tensorrt.plan import PRECISIONS, current_gpu, fp8_unsupported, require_tensorrt
from tools.build_checks import check_int8_source
from tools.cli_parser import CliParser, check_at_least_one


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools build", description=__doc__)
    p.add_argument("work", type=Path, help="work folder (export, and quantize for int8)")
    p.add_argument("--precision", default="int8", choices=list(PRECISIONS))
    p.add_argument("--min-batch", type=int, help="smallest batch of images (default: export.json profile)")
    p.add_argument("--opt-batch", type=int, help="batch TensorRT tunes for (default: export.json profile)")
    p.add_argument("--max-batch", type=int, help="largest batch of images (default: export.json profile)")
    p.add_argument("--timing-cache", type=Path, help="tactic timing cache: loaded if it exists, updated after")
    p.add_argument("--opt-level", type=int, help="builder optimization level 0..5 (TensorRT's default: 3)")
    p.add_argument("--workspace-gb", type=float, help="workspace memory pool limit in GiB (default: the GPU's)")
    p.add_argument("--unet-only", action="store_true",
                   help="text-to-image folders: build the UNet engine only (not the text encoder(s) and VAE decoder)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="record that sample/bench run this engine with CUDA graphs (one capture per input shape)")
    args = p.parse_args(argv)
    check_at_least_one(args, "min_batch", "opt_batch", "max_batch")
    cache = args.timing_cache
    if cache is not None and (cache.is_dir() or not cache.parent.is_dir()):
        raise UserError(f"--timing-cache '{cache}' must be a file in an existing folder")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    source = source_onnx(work, args.precision)
    groups = source_groups(work, args.precision)
    if args.precision in ("int8", "fp8"):
        # the tensorrt target, the format and TensorRT's Q/DQ rules, before any GPU work
        check_int8_source(work, source, args.precision)
        for path in groups.model_paths(source.parent) if groups is not None else ():
            check_int8_source(work, path, args.precision)
    options = BuildOptions(
        precision=args.precision,
        profiles=tuple(profiles_from_export(info, args.min_batch, args.opt_batch, args.max_batch)),
        timing_cache=args.timing_cache,
        opt_level=args.opt_level,
        workspace_gb=args.workspace_gb,
        cuda_graph=args.cuda_graph,
    )
    # Everything about the input is checked: now the machine. Both raise a UserError with the install hint.
    trt = require_tensorrt()
    gpu = current_gpu()
    if args.precision == "fp8":
        problem = fp8_unsupported(trt.__version__, hasattr(trt.DataType, "FP8"), gpu.compute_capability)
        if problem:
            raise UserError(f"build --precision fp8 on {gpu.name}: {problem}")
    from engines.tensorrt.groups import build_grouped_engines

    more = f" and one per time-step group ({len(groups.groups)} group graphs)" if groups is not None else ""
    print(f"building a {args.precision} engine from {source.name}{more}; profile "
          + json.dumps({n: r.to_json() for n, r in options.profiles[0].items()}))
    plan, meta = build_grouped_engines(work, options, command="python -m tools build " + " ".join(argv))
    layers = meta.builder.get("layers", {})
    low = "fp8" if args.precision == "fp8" else "int8"
    print(f"wrote {plan} (+ {plan.name}.json) in {meta.builder.get('build_seconds')} s: {layers.get('layers')} "
          f"layers, {layers.get(low + '_convolutions')} of {layers.get('convolutions')} convolutions in "
          f"{low.upper()}" + (f", {layers.get('fp8_layers')} layers with FP8 input" if low == "fp8" else ""))
    for g in meta.timestep_groups:
        print(f"  t {g.first_t}..{g.last_t}: {g.plan} ({g.plan_bytes} bytes) in {g.build_seconds} s, "
              f"{g.layers.get('int8_convolutions')} of {g.layers.get('convolutions')} convolutions in INT8")
    if not args.unet_only:
        build_components(work, info, args, " ".join(argv))
    return 0


def build_components(work: WorkDir, info: dict[str, Any], args: argparse.Namespace, argv: str) -> None:
    """One FP16 engine per text encoder and the VAE decoder, each with its own profile from export.json."""
    from engines.tensorrt.build import build_engine
    from engines.tensorrt.components import COMPONENT_PRECISION, component_names, component_plan_path, component_profile

    for name in component_names(info):
        profile = component_profile(info, name, args.min_batch, args.opt_batch, args.max_batch)
        options = BuildOptions(precision=COMPONENT_PRECISION, profiles=(profile,), timing_cache=args.timing_cache,
                               opt_level=args.opt_level, workspace_gb=args.workspace_gb)
        source = work.root / info["components"][name]["file"]
        plan, meta = build_engine(work, options, command=f"python -m tools build {argv}", source=source,
                                  plan=component_plan_path(work.root, name))
        print(f"wrote {plan} (+ {plan.name}.json) in {meta.builder.get('build_seconds')} s")
