"""``python -m tools pipeline --model DIR WORK``: the main job, stage after stage, on one work folder."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

from common.workdir import WorkDir


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools pipeline", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="local diffusers model folder")
    p.add_argument("work", type=Path)
    p.add_argument("--force", action="store_true", help="replace WORK if it is not empty")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--num", type=int, default=16, help="images per grid")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(command, argv) of each stage, in order."""
    work = str(args.work)
    export = ["--model", str(args.model), work] + (["--force"] if args.force else [])
    sample = [work, "--steps", str(args.steps), "--num", str(args.num), "--seed", str(args.seed)]
    return [
        ("export", export),
        ("sample", sample + ["--precision", "fp32"]),
    ]


def main(argv: list[str]) -> int:
    args = parse(argv)
    from tools.__main__ import COMMANDS

    for name, stage_argv in stages(args):
        print(f"\n== python -m tools {name} {' '.join(stage_argv)}")
        run: Callable[[list[str]], int] = importlib.import_module(COMMANDS[name]).main
        code = run(stage_argv)
        if code != 0:
            return code
    work = WorkDir(args.work)
    print(f"\noutputs in {work.root}/:")
    for path in sorted(work.root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            print(f"  {path.relative_to(work.root)}")
    return 0
