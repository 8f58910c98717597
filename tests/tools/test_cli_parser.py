"""The arguments every command shares: one --backend, the trajectory flags, and the >= 1 check."""

from __future__ import annotations

import argparse

import pytest

from common.errors import UserError
from engines.backends import BACKENDS
from tools.cli_parser import (
    CliParser,
    add_backend,
    add_trajectory_args,
    check_at_least_one,
    check_backend,
    check_trajectory_args,
    cpu_backend_arg,
)


def _parser() -> CliParser:
    p = CliParser(prog="python -m tools x")
    add_backend(p, "runs it")
    add_trajectory_args(p, "compared steps")
    return p


def test_one_backend_choice_set_and_defaults() -> None:
    args = _parser().parse_args([])
    assert args.backend == "auto" and (args.steps, args.points, args.num, args.seed) == (50, 5, 4, 0)
    assert args.scheduler == "ddim"
    assert [a for a in _parser()._actions if a.dest == "backend"][0].choices == list(BACKENDS)
    with pytest.raises(UserError, match="invalid choice: 'cuda'"):
        _parser().parse_args(["--backend", "cuda"])


def test_commands_refuse_the_backends_they_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import engines.cpu_backend

    check_backend("trt", ("auto", "trt"), "validate")
    with pytest.raises(UserError, match=r"^--backend ort-gpu: validate runs on auto, trt only$"):
        check_backend("ort-gpu", ("auto", "trt"), "validate")
    monkeypatch.setattr(engines.cpu_backend, "choose_cpu_backend", lambda: ("openvino", "mocked"))
    assert cpu_backend_arg("auto", "report") == "openvino" and cpu_backend_arg("ort", "report") == "ort"
    with pytest.raises(UserError, match=r"^--backend trt: sensitivity runs on auto, ort, openvino only$"):
        cpu_backend_arg("trt", "sensitivity")


def test_trajectory_checks() -> None:
    check_trajectory_args(_parser().parse_args(["--steps", "4", "--points", "4"]))
    with pytest.raises(UserError, match=r"^--points 5 exceeds --steps 4$"):
        check_trajectory_args(_parser().parse_args(["--steps", "4"]))
    check_trajectory_args(_parser().parse_args(["--steps", "4"]), points=False)
    with pytest.raises(UserError, match=r"^--num must be >= 1, got 0$"):
        check_trajectory_args(_parser().parse_args(["--num", "0"]))


def test_at_least_one_names_the_flag_and_lets_unset_ones_pass() -> None:
    args = argparse.Namespace(batch_size=0, max_batch=None, steps=3)
    check_at_least_one(args, "max_batch", "steps")
    with pytest.raises(UserError, match=r"^--batch-size must be >= 1, got 0$"):
        check_at_least_one(args, "steps", "batch_size")
