"""What Triton's Python-backend stub needs from this interpreter, computed here so ``serve`` sets it itself.

PyTriton runs the tritonserver binary, whose Python backend starts one stub process per model instance. The stub
embeds Python (isolated mode: it ignores PYTHONPATH) and finds our virtual environment through PATH. Two things
go wrong with PyTriton 0.7.0 in our environment, both measured:

1. The stub links ``libpython3.X.so.1.0`` by soname and the loader finds the system's copy, older than the
   interpreter of our virtual environment: the model fails to initialize with ``AttributeError: '_thread.RLock'
   object has no attribute '_recursion_count'``. Fix: LD_LIBRARY_PATH starts with the running interpreter's own
   library folder (``sysconfig``'s LIBDIR, the folder holding its ``libpython3.X.so.1.0``).
2. The stub's pybind11 reads numpy 1's dtype layout: with numpy 2 (ours, requirements.txt) every output tensor
   arrives empty at the client. Fix: numpy 1.26 in a separate folder (``STUB_SITE``, requirements-triton-stub.txt)
   that a one-line ``.pth`` hook in site-packages puts first on ``sys.path`` only inside the stub process (it checks
   ``/proc/self/exe``); every other process of the environment keeps numpy 2.

``python -m serving.stub_env`` writes the hook (``make setup`` runs it after installing STUB_SITE).
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from common.atomic import atomic_path
from common.errors import UserError

STUB_EXE = "triton_python_backend_stub"
HOOK_NAME = "qdiff_triton_stub.pth"
STUB_SITE_NAME = "triton-stub-site"
STUB_SITE = Path(sys.prefix) / STUB_SITE_NAME  # the stub finds the same sys.prefix (through PATH)
INSTALL_HINT = ("pip install --no-deps -r requirements-serve.txt && pip install --no-deps --target "
                f"{STUB_SITE} -r requirements-triton-stub.txt && python -m serving.stub_env  (or: make setup)")


def interpreter_lib_dir() -> Path | None:
    """The folder holding this interpreter's shared ``libpython3.X.so.1.0``; None for a statically linked Python."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file():
        return None
    return Path(libdir)


def hook_line() -> str:
    """The ``.pth`` line: inside the stub process only, put ``<sys.prefix>/triton-stub-site`` first on ``sys.path``
    (relative to the prefix, so the hook holds in every worktree that links the same environment)."""
    return (f"import os, sys; os.path.basename(os.path.realpath('/proc/self/exe')) == '{STUB_EXE}' "
            f"and sys.path.insert(0, os.path.join(sys.prefix, '{STUB_SITE_NAME}'))\n")


def hook_path() -> Path:
    return Path(sysconfig.get_path("purelib")) / HOOK_NAME


def write_hook() -> Path:
    """Write the ``.pth`` hook into this environment's site-packages (atomically); returns its path."""
    path = hook_path()
    with atomic_path(path) as tmp:
        tmp.write_text(hook_line())
    return path


def check_stub_env() -> None:
    """UserError saying how to install what the stub needs when PyTriton, the stub's numpy or the hook is missing."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        raise UserError(f"serving needs PyTriton (nvidia-pytriton): {INSTALL_HINT}")
    if int(_numpy_major()) < 2:
        return  # numpy 1.x everywhere: the stub reads it as it is
    if not (STUB_SITE / "numpy").is_dir():
        raise UserError(f"serving needs numpy 1.x for Triton's Python-backend stub in '{STUB_SITE}': {INSTALL_HINT}")
    path = hook_path()
    if not path.is_file() or path.read_text() != hook_line():
        raise UserError(f"the stub's numpy hook '{path}' is missing or stale: run python -m serving.stub_env")


@contextlib.contextmanager
def server_environment() -> Iterator[dict[str, str]]:
    """Within the block, LD_LIBRARY_PATH starts with this interpreter's library folder (PyTriton copies the
    environment into the tritonserver process when it starts it); restored afterwards. Yields what was set."""
    lib = interpreter_lib_dir()
    old = os.environ.get("LD_LIBRARY_PATH")
    if lib is None:
        yield {}
        return
    value = str(lib) if not old else f"{lib}{os.pathsep}{old}"
    os.environ["LD_LIBRARY_PATH"] = value
    try:
        yield {"LD_LIBRARY_PATH": value}
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


def _numpy_major() -> str:
    import numpy

    return numpy.__version__.split(".")[0]


def main() -> int:
    path = write_hook()
    print(f"wrote {path}: Triton's Python-backend stub imports numpy from {STUB_SITE}")
    if not (STUB_SITE / "numpy").is_dir():
        print(f"warning: {STUB_SITE} has no numpy yet: pip install --no-deps --target {STUB_SITE} "
              "-r requirements-triton-stub.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
