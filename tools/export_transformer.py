"""``export --model DIR`` for a transformer family's folder (SD3, FLUX, PixArt, DiT): the denoiser, text encoders
and VAE decoder (exporter/transformer_pipeline.py) into WORK, atomically, with export.json."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common.atomic import atomic_dir, write_json
from common.errors import UserError
from common.workdir import EXPORT_SCHEMA_VERSION, WorkDir
from exporter.pipeline_folder import PipelineSource
from pipelines.families.family import Family
from tools.export_cmd import load_source, peak_rss_gib, versions


def export_transformer(args: argparse.Namespace, argv: list[str], pipe: PipelineSource | None,
                       family: Family) -> int:
    """Export ``args.model`` of the transformer ``family`` into ``args.work``; 0 on success."""
    from exporter.transformer_pipeline import export_transformer_pipeline

    work = WorkDir(args.work)
    start = time.time()
    module, provenance = load_source(args, family)
    n_params = sum(p.numel() for p in module.parameters())
    print(f"exporting the {family.name} pipeline: {type(module).__name__} ({n_params / 1e6:.1f} M parameters), "
          f"text encoders and VAE decoder ...")
    try:
        with atomic_dir(args.work) as tmp:
            result = export_transformer_pipeline(pipe, family, module, args.model / "vae", tmp, args.cond_len,
                                                 args.tolerance, args.opset)
            info: dict[str, Any] = {
                "schema_version": EXPORT_SCHEMA_VERSION,
                "family": family.name,
                **provenance,
                "model_class": type(module).__name__,
                "unet_config": {k: v for k, v in dict(module.config).items() if not k.startswith("_")},
                "num_parameters": n_params,
                **result.denoiser,
                "profile": {"min_batch": 1, "opt_batch": 1, "max_batch": args.max_batch},
                "components": result.components,
                **({"text_to_image": result.text_to_image} if result.text_to_image is not None else {}),
                "export_seconds": round(time.time() - start, 1),
                "peak_rss_gib": round(peak_rss_gib(), 2),
                "versions": versions(),
                "command": "python -m tools export " + " ".join(argv),
            }
            write_json(tmp / work.export_json.name, info)
    except OSError as exc:
        raise UserError(f"cannot write WORK '{args.work}': {exc}") from exc
    files = ", ".join(c["file"] for c in info["components"].values())
    print(f"wrote {work.model}, {files} and {work.export_json}")
    sys.stdout.flush()
    return 0
