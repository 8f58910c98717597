"""The argument parser of every command: a bad flag is a UserError, printed on one line with exit code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from common.errors import UserError


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors raise UserError instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see --help)")
