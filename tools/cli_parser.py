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


def add_backend(group: argparse._ActionsContainer, runs: str, default: str = "auto") -> None:
    """``--backend``, one choice set for every command (``engines.backends.BACKENDS``); ``runs`` says what it runs.
    A command that cannot run some of them refuses those with ``check_backend``."""
    from engines.backends import BACKENDS

    group.add_argument("--backend", default=default, choices=list(BACKENDS),
                       help=f"{runs} (auto: TensorRT when it and a GPU are present, else OpenVINO on VNNI/AMX CPUs "
                            "when installed, else ONNX Runtime; commands that run on the CPU only take the CPU one)")


def check_backend(backend: str, allowed: tuple[str, ...], command: str) -> None:
    """UserError naming ``--backend`` when ``command`` cannot run ``backend`` (not in ``allowed``)."""
    if backend not in allowed:
        raise UserError(f"--backend {backend}: {command} runs on {', '.join(allowed)} only")


def cpu_backend_arg(backend: str, command: str) -> str:
    """The CPU backend of a command that runs on the CPU only: ``ort`` or ``openvino`` as given, ``auto`` as
    ``choose_cpu_backend`` picks it (OpenVINO on VNNI/AMX CPUs when installed); others refused."""
    from engines.cpu_backend import choose_cpu_backend

    check_backend(backend, ("auto", "ort", "openvino"), command)
    return choose_cpu_backend()[0] if backend == "auto" else backend


def add_trajectory_args(group: argparse._ActionsContainer, points_help: str) -> None:
    """The FP32 trajectories ``validate`` and ``sensitivity`` compare on: ``--steps --points --num --seed
    --scheduler`` (check them with ``check_trajectory_args``)."""
    from pipelines.schedulers import SCHEDULERS

    group.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    group.add_argument("--steps", type=int, default=50, help="sampler steps of the FP32 trajectory")
    group.add_argument("--points", type=int, default=5, help=points_help)
    group.add_argument("--num", type=int, default=4, help="trajectories (batch rows) per compared time step")
    group.add_argument("--seed", type=int, default=0)


def check_trajectory_args(args: argparse.Namespace, points: bool = True) -> None:
    """UserError unless --steps, --points and --num are >= 1 and (when ``points`` are compared) --points is at most
    --steps."""
    check_at_least_one(args, "steps", "points", "num")
    if points and args.points > args.steps:
        raise UserError(f"--points {args.points} exceeds --steps {args.steps}")


def check_at_least_one(args: argparse.Namespace, *dests: str) -> None:
    """UserError "--<flag> must be >= 1, got V" for the first of ``dests`` (argparse dest names) below 1; an
    optional flag left out (None) passes."""
    for dest in dests:
        value = getattr(args, dest)
        if value is not None and value < 1:
            raise UserError(f"--{dest.replace('_', '-')} must be >= 1, got {value}")
