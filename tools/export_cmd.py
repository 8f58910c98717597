"""``python -m tools export --model DIR | --arch NAME WORK``: diffusers UNet -> WORK/model.onnx + export.json;
a text-to-image pipeline folder also gives text_encoder(_2).onnx and vae_decoder.onnx."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_dir, write_json
from common.errors import CheckFailed, UserError
from common.hashing import onnx_model_sha256
from common.workdir import EXPORT_SCHEMA_VERSION, WorkDir
from exporter.onnx_export import DEFAULT_OPSET, OUTPUT, export_unet, shapes_for
from exporter.verify import default_timesteps, verify_export
from pipelines.families.family import Family
from pipelines.families.registry import BARE
from tools.cli_parser import CliParser


def add_work_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("work", type=Path, help="work folder to create")
    p.add_argument("--force", action="store_true", help="replace WORK if it exists and is not empty")


def check_new_work(work: Path, force: bool) -> None:
    """WORK must be creatable: absent, empty, or replaced with --force; its parent must be a writable folder."""
    if work.exists() and not work.is_dir():
        raise UserError(f"WORK '{work}' exists and is not a folder")
    if work.is_dir() and any(work.iterdir()) and not force:
        raise UserError(f"WORK '{work}' is not empty (use --force to replace it)")
    parent = work.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"cannot write WORK '{work}': '{probe}' is not a writable folder")


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools export", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="local diffusers UNet folder, or pipeline folder with unet/ "
                     "(a text-to-image pipeline: text_encoder(_2)/, tokenizer(_2)/, unet/, vae/, scheduler/)")
    src.add_argument("--arch", help="build a known architecture with random weights: ddpm-cifar10, sd15-unet (UNets); "
                     "sd15 (the whole Stable Diffusion 1.5 pipeline: text encoder, UNet, VAE decoder)")
    add_work_arg(p)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch for engine profiles (recorded)")
    p.add_argument("--cond-len", type=int, default=None,
                   help="encoder_hidden_states length (conditional models; default: the tokenizer's "
                        "model_max_length for pipeline folders, else 77)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max relative error ONNX vs PyTorch (default: the model family's, 1e-3 for UNet pipelines)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights for --arch")
    args = p.parse_args(argv)
    if not 13 <= args.opset <= 21:
        raise UserError(f"--opset {args.opset} out of range: per-channel Q/DQ needs >= 13, ONNX Runtime/TensorRT <= 21")
    if args.max_batch < 1:
        raise UserError("--max-batch must be >= 1")
    return args


def load_source(args: argparse.Namespace, family: Family) -> tuple[Any, dict[str, Any]]:
    """The UNet module and the provenance part of export.json."""
    if args.arch:
        from exporter.architectures import build_random_unet, get_architecture

        arch = get_architecture(args.arch)
        unet = build_random_unet(arch, seed=args.seed)
        return unet, {
            "source": {"arch": arch.name, "random_weights_seed": args.seed},
            "scheduler": {**family.default_scheduler(arch.class_name), **arch.scheduler_config},
            "scheduler_source": f"arch:{arch.name}",
        }
    from exporter.loading import load_unet, locate_model

    source = locate_model(args.model, family)
    unet = load_unet(source)
    return unet, {
        "source": {
            "model_dir": str(args.model.resolve()),
            "unet_dir": str(source.unet_dir.resolve()),
            "weights": [p.name for p in source.weight_files],
            "weights_sha256": source.weights_sha256(),
        },
        "scheduler": source.scheduler_config,
        "scheduler_source": source.scheduler_source,
    }


def model_family(model_dir: Path) -> Family:
    """The family of a model folder without text encoders: by model_index.json's ``_class_name``, else bare."""
    from common.jsonfile import read_json
    from pipelines.families.registry import family_for_pipeline

    index = read_json(Path(model_dir) / "model_index.json") or {}
    return family_for_pipeline(str(index.get("_class_name", "")), [])


def versions() -> dict[str, str]:
    import diffusers
    import onnx
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def main(argv: list[str]) -> int:
    args = parse(argv)
    WorkDir(args.work)
    check_new_work(args.work, args.force)
    from exporter.random_pipelines import PIPELINE_ARCHITECTURES

    if args.arch in PIPELINE_ARCHITECTURES:
        return export_random_pipeline(args, argv)
    return export(args, argv)


def export_random_pipeline(args: argparse.Namespace, argv: list[str]) -> int:
    """``--arch sd15``: the pipeline with random weights, saved to a scratch folder beside WORK, exported like
    ``--model``; its tokenizer is kept in WORK/tokenizer (the runner loads it from there), the scratch removed."""
    import tempfile

    from exporter.random_pipelines import build_random_pipeline

    parent = args.work.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{args.work.name}.{args.arch}-", dir=parent))
    try:
        print(f"building the {args.arch} pipeline with random weights (seed {args.seed}) ...")
        build_random_pipeline(args.arch, scratch / "pipeline", seed=args.seed)
        arch = args.arch
        args.model, args.arch = scratch / "pipeline", None
        return export(args, argv, random_arch=arch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export(args: argparse.Namespace, argv: list[str], random_arch: str | None = None) -> int:
    """Export ``--model`` or a UNet ``--arch`` (and a pipeline's other components) into WORK, atomically."""
    work = WorkDir(args.work)
    pipe = None
    if args.model is not None:
        from exporter.loading import locate_model
        from exporter.pipeline_folder import locate_pipeline

        locate_model(args.model)  # fail on a bad folder before torch is imported
        pipe = locate_pipeline(args.model)
    family = BARE if pipe is None else pipe.family
    if args.model is not None and pipe is None:  # a folder whose family has no text encoder (DiT)
        family = model_family(args.model)
    if args.tolerance is None:
        args.tolerance = family.export_tolerance
    if family.transformer is not None:
        from tools.export_transformer import export_transformer

        return export_transformer(args, argv, pipe, family)
    start = time.time()
    unet, provenance = load_source(args, family)
    shapes = shapes_for(unet, args.cond_len or 77)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"exporting {type(unet).__name__} ({n_params / 1e6:.1f} M parameters) to ONNX opset {args.opset} ...")
    try:  # with --force the old folder stays until the verified new one replaces it (atomic_dir)
        with atomic_dir(args.work) as tmp:
            pipeline_info: dict[str, Any] = {}
            if pipe is not None:
                pipeline_info = export_pipeline_components(pipe, unet, shapes, tmp, args)
                length = pipeline_info["components"][pipe.text_encoders[0].name]["sequence_length"]
                shapes = replace(shapes, cond_len=length)
            large = export_unet(unet, shapes, tmp / work.model.name, opset=args.opset)
            export_seconds = time.time() - start
            steps = default_timesteps(int(provenance["scheduler"].get("num_train_timesteps", 1000)))
            result = verify_export(unet, tmp / work.model.name, shapes, steps, args.tolerance)
            print(
                f"ONNX vs PyTorch at t={[int(t) for t in steps]}: max relative error {result.max_rel_error:.2e} "
                f"(tolerance {args.tolerance:g})"
            )
            if not result.ok:
                raise CheckFailed(
                    f"ONNX output differs from PyTorch: max relative error {result.max_rel_error:.2e} > "
                    f"tolerance {args.tolerance:g}; nothing written"
                )
            info = {
                "schema_version": EXPORT_SCHEMA_VERSION,
                "family": family.name,
                **provenance,
                "model_class": type(unet).__name__,
                "unet_config": {k: v for k, v in dict(unet.config).items() if not k.startswith("_")},
                "num_parameters": n_params,
                "onnx": {
                    "file": work.model.name,
                    "external_data": (work.model.name + ".data") if large else None,
                    "sha256": onnx_model_sha256(tmp / work.model.name),
                    "opset": args.opset,
                },
                "inputs": {n: {"shape": s, "dtype": "float32"} for n, s in shapes.input_shapes("batch").items()},
                "outputs": {OUTPUT: {"shape": shapes.input_shapes("batch")["sample"][:1]
                                     + [unet.config.out_channels, shapes.height, shapes.width], "dtype": "float32"}},
                "dynamic_axes": {n: {"0": "batch"} for n in shapes.input_names() + [OUTPUT]},
                "profile": {"min_batch": 1, "opt_batch": 1, "max_batch": args.max_batch},
                "verification": result.to_json(),
                **pipeline_info,
                "export_seconds": round(export_seconds, 1),
                "peak_rss_gib": round(peak_rss_gib(), 2),
                "versions": versions(),
                "command": "python -m tools export " + " ".join(argv),
            }
            if random_arch is not None:
                keep_tokenizers(info, tmp, work.root)
                info["source"] = {"arch": random_arch, "random_weights_seed": args.seed}
            write_json(tmp / work.export_json.name, info)
    except OSError as exc:
        raise UserError(f"cannot write WORK '{args.work}': {exc}") from exc
    extra = "".join(f", {c['file']}" for c in info.get("components", {}).values())
    print(f"wrote {work.model}{extra} and {work.export_json}")
    sys.stdout.flush()
    return 0


def export_pipeline_components(pipe: Any, unet: Any, shapes: Any, out_dir: Path,
                               args: argparse.Namespace) -> dict[str, Any]:
    """Text encoder(s) and VAE decoder of a text-to-image folder, exported and verified into ``out_dir``: the
    ``components`` and ``text_to_image`` parts of export.json."""
    from exporter.components import check_unet_fits, export_components, text_to_image_record

    if not shapes.conditional:
        raise UserError(f"--model '{args.model}': a text-to-image pipeline needs a UNet2DConditionModel "
                        f"(its unet is {type(unet).__name__})")
    latent = (shapes.channels, shapes.height, shapes.width)
    print(f"exporting the text encoder(s) and VAE decoder of {pipe.class_name or 'the pipeline'} ...")
    records = export_components(pipe, latent, out_dir, args.cond_len, args.tolerance, args.opset)
    for name, rec in records.items():
        print(f"  {rec['file']}: max relative error vs PyTorch {rec['verification']['max_rel_error']:.2e}")
    check_unet_fits(pipe, records, shapes.cond_dim, shapes.pooled_dim)
    image = records["vae_decoder"]["outputs"]["images"]["shape"][2:]
    return {"components": records, "text_to_image": text_to_image_record(pipe, (int(image[0]), int(image[1])))}


def keep_tokenizers(info: dict[str, Any], tmp: Path, final: Path) -> None:
    """Copy each text encoder's tokenizer into the work folder (``tokenizer/``, ``tokenizer_2/``) and point
    export.json at the final path: for sources that are not kept (random-weight pipelines)."""
    for name, rec in info.get("components", {}).items():
        if "tokenizer_dir" in rec:
            sub = "tokenizer" + name.removeprefix("text_encoder")
            shutil.copytree(rec["tokenizer_dir"], tmp / sub)
            rec["tokenizer_dir"] = str((final / sub).resolve())
            rec["source_dir"] = None
    if "text_to_image" in info:
        info["text_to_image"]["model_dir"] = None


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
