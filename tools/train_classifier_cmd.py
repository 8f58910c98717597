"""``python -m tools train-classifier OUT``: train the small digit classifier whose features give FD-digits."""

from __future__ import annotations

from pathlib import Path

from tools.cli_parser import CliParser
from validation.digit_classifier import train_classifier


def main(argv: list[str]) -> int:
    """``python -m tools train-classifier OUT``."""
    p = CliParser(prog="python -m tools train-classifier")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    record = train_classifier(args.out, args.seed)
    print(f"held-out accuracy {record['held_out_accuracy']}: {args.out}")
    return 0
