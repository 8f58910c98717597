"""Inputs that several commands read from files: float arrays (``--init-noise``) and the conditioning flags
(``--prompt``, ``--prompts``, ``--negative-prompt`` for text-to-image folders; ``--cond``, ``--uncond``;
``--guidance-scale``), turned into the one ``Conditioning`` every stage uses (pipelines/conditioning_inputs.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from pipelines.conditioning import HIDDEN_STATES, Conditioning
from pipelines.conditioning_inputs import ConditioningInputs, prompts_from_flags, resolve_conditioning


def load_array(path: Path, flag: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A float32 .npy matching ``shape`` (None = any); errors name the flag and the file."""
    if not path.is_file():
        raise UserError(f"{flag} file '{path}' does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} file '{path}' is not a readable .npy array: {exc}") from exc
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape, strict=False))
    if not ok or not np.issubdtype(arr.dtype, np.floating):
        want = "×".join("*" if s is None else str(s) for s in shape)
        raise UserError(f"{flag} file '{path}' has shape {arr.shape} {arr.dtype}; expected {want} float")
    return arr.astype(np.float32)


def add_conditioning_args(group: argparse._ActionsContainer, guidance: float = 7.5) -> None:
    """``--prompt``, ``--prompts``, ``--negative-prompt`` (text-to-image folders), ``--cond``, ``--uncond``
    (conditional UNets), ``--guidance-scale``."""
    group.add_argument("--prompt", help="text-to-image folders: the prompt (default: the prompts.txt of the source "
                                        "model folder, when it has one)")
    group.add_argument("--prompts", type=Path, help="text-to-image folders: a text file, one prompt a line; image i "
                                                    "takes prompt i mod N")
    group.add_argument("--negative-prompt", help="the unconditional row of guidance (default: the empty prompt; SDXL "
                                                 "pipelines with force_zeros_for_empty_prompt: zeros)")
    group.add_argument("--cond", type=Path, help=f".npy of {HIDDEN_STATES}, R×L×D: image i takes row i mod R "
                                                 "(default: 8 seeded random rows, as for a random-weight model)")
    group.add_argument("--uncond", type=Path, help=f".npy of the unconditional {HIDDEN_STATES} for guidance, R'×L×D "
                                                   "(default: the empty prompt's embedding when the folder has a text "
                                                   "encoder, else zeros)")
    group.add_argument("--guidance-scale", type=float, default=guidance,
                       help=f"classifier-free guidance scale (default {guidance:g}; <= 1 with prompts: no guidance)")


def conditioning_inputs(args: argparse.Namespace, seed: int) -> ConditioningInputs:
    """The conditioning flags as one ConditioningInputs (arrays loaded; shapes checked against the model later)."""
    prompts, source = prompts_from_flags(args.prompt, args.prompts)
    cond = load_array(args.cond, "--cond", (None, None, None)) if args.cond else None
    uncond = load_array(args.uncond, "--uncond", (None, None, None)) if args.uncond else None
    if uncond is not None and cond is None:
        raise UserError("--uncond needs --cond (with prompts, the unconditional row is --negative-prompt)")
    return ConditioningInputs(prompts=prompts, negative_prompt=args.negative_prompt, cond=cond, uncond=uncond,
                              guidance_scale=args.guidance_scale, random_seed=seed, prompts_source=source)


def conditioning_from_args(args: argparse.Namespace, info: dict[str, Any], seed: int, images: int | None = None,
                           work_root: Path | None = None) -> Conditioning | None:
    """The conditioning the flags ask for (pipelines.conditioning_inputs.resolve_conditioning: prompts through the
    work folder's text encoder(s), or --cond/--uncond, or seeded random rows); with ``images``, a ``--cond`` file
    must have 1 row or one row per image."""
    inputs = conditioning_inputs(args, seed)
    root = Path(work_root if work_root is not None else args.work)
    result = resolve_conditioning(root, info, inputs, getattr(args, "threads", 0))
    if result is not None and inputs.cond is not None and images is not None:
        result.check_rows(images, f"--cond file '{args.cond}'")
    return result
