"""The argument parser of every command: a bad flag is a UserError, printed on one line with exit code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from common.errors import UserError


def add_clipped_model_output(group: argparse._ActionsContainer, where: str = "") -> None:
    """``--use-clipped-model-output`` (None when absent: diffusers' default, the option is not passed)."""
    group.add_argument("--use-clipped-model-output", action="store_true", default=None,
                       help="DDIM-type schedulers: step with eps re-derived from the clipped x0 (diffusers' "
                            f"use_clipped_model_output; default: unset, as diffusers' pipelines){where}")


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors raise UserError instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see --help)")
