"""``python -m tools <command> ...``: dispatch to one module per command; user errors exit 2, failed checks exit 1."""

from __future__ import annotations

import importlib
import sys

from common.errors import CheckFailed, UserError

COMMANDS: dict[str, str] = {
    "build": "tools.build_cmd",
    "calibrate": "tools.calibrate_cmd",
    "client": "tools.client_cmd",
    "export": "tools.export_cmd",
    "lint": "tools.lint_cmd",
    "quantize": "tools.quantize_cmd",
    "report": "tools.report_cmd",
    "pipeline": "tools.pipeline_cmd",
    "sample": "tools.sample_cmd",
    "sensitivity": "tools.sensitivity_cmd",
    "serve": "tools.serve_cmd",
    "train-classifier": "tools.train_classifier_cmd",
    "train-reference": "tools.train_reference",
    "train-reference-mmdit": "tools.train_reference_mmdit",
    "train-reference-t2i": "tools.train_reference_t2i",
    "validate": "tools.validate_cmd",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command '{argv[0]}'; known: {known}", file=sys.stderr)
            return 2
        print(f"usage: python -m tools <command> [options]\ncommands: {known}")
        return 0
    module = importlib.import_module(COMMANDS[argv[0]])
    try:
        return int(module.main(argv[1:]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
