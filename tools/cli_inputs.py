"""Inputs that several commands read from files: float arrays (``--init-noise``) and the conditioning flags
(``--cond``, ``--uncond``, ``--guidance-scale``), turned into the one ``Conditioning`` every stage uses."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from engines.conditioning import HIDDEN_STATES, Conditioning, conditioning_for


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


def add_conditioning_args(group: argparse._ActionsContainer) -> None:
    """``--cond``, ``--uncond``, ``--guidance-scale`` (conditional UNets)."""
    group.add_argument("--cond", type=Path, help=f".npy of {HIDDEN_STATES}, R×L×D: image i takes row i mod R "
                                                 "(default: 8 seeded random rows, as for a random-weight model)")
    group.add_argument("--uncond", type=Path, help=f".npy of the unconditional {HIDDEN_STATES} for guidance, R'×L×D "
                                                   "(default zeros)")
    group.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance scale")


def conditioning_from_args(args: argparse.Namespace, info: dict[str, Any], seed: int,
                           images: int | None = None) -> Conditioning | None:
    """The conditioning the flags ask for (``conditioning_for``'s rule); with ``images``, a ``--cond`` file must
    have 1 row or one row per image."""
    spec = info["inputs"].get(HIDDEN_STATES)
    if spec is None:
        if args.cond or args.uncond:
            raise UserError(f"--cond/--uncond given but the model has no {HIDDEN_STATES} input")
        return None
    shape = (None, spec["shape"][1], spec["shape"][2])
    cond = load_array(args.cond, "--cond", shape) if args.cond else None
    uncond = load_array(args.uncond, "--uncond", shape) if args.uncond else None
    if cond is None:
        print("no --cond given: using seeded random N(0,1) text embeddings, as for a random-weight model")
    result = conditioning_for(info["inputs"], cond, uncond, args.guidance_scale, seed)
    if result is not None and cond is not None and images is not None:
        result.check_rows(images, f"--cond file '{args.cond}'")
    return result
