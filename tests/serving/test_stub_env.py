"""The stub's environment: the interpreter's own libpython first on LD_LIBRARY_PATH (restored after), the numpy
hook that only the stub process honours."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from common.errors import UserError
from serving import stub_env


def test_interpreter_lib_dir_holds_this_interpreters_libpython() -> None:
    lib = stub_env.interpreter_lib_dir()
    if lib is None:
        pytest.skip("this Python is linked statically (no libpython to point the stub at)")
    assert (lib / sysconfig.get_config_var("INSTSONAME")).is_file()
    assert lib == Path(sysconfig.get_config_var("LIBDIR"))


def test_server_environment_prepends_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    with stub_env.server_environment() as env:
        lib = stub_env.interpreter_lib_dir()
        if lib is not None:
            assert os.environ["LD_LIBRARY_PATH"] == f"{lib}{os.pathsep}/opt/other" == env["LD_LIBRARY_PATH"]
    assert os.environ["LD_LIBRARY_PATH"] == "/opt/other"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    with stub_env.server_environment():
        pass
    assert "LD_LIBRARY_PATH" not in os.environ


def test_hook_is_inert_outside_the_stub(tmp_path: Path) -> None:
    """Executed as a .pth line would be, in an ordinary interpreter: sys.path is unchanged."""
    code = f"import sys; before = list(sys.path); exec({stub_env.hook_line()!r}); print(sys.path == before)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    assert stub_env.STUB_EXE in stub_env.hook_line() and stub_env.STUB_SITE_NAME in stub_env.hook_line()


def test_this_environment_is_ready_to_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This environment passes the check, and the check names what is missing in one without the stub's numpy
    or with a stale hook."""
    pytest.importorskip("pytriton")
    assert stub_env.check_stub_env() is None  # raises a UserError saying what to install otherwise
    if int(stub_env._numpy_major()) < 2:
        return  # numpy 1.x: the stub needs neither its own numpy nor the hook
    (tmp_path / "site" / "numpy").mkdir(parents=True)
    monkeypatch.setattr(stub_env, "STUB_SITE", tmp_path / "site")
    stale = tmp_path / "hook.pth"
    stale.write_text("import sys\n")
    monkeypatch.setattr(stub_env, "hook_path", lambda: stale)
    with pytest.raises(UserError, match=r"numpy hook '.*hook\.pth' is missing or stale"):
        stub_env.check_stub_env()
    monkeypatch.setattr(stub_env, "STUB_SITE", tmp_path / "empty")
    with pytest.raises(UserError, match=r"numpy 1\.x for Triton's Python-backend stub in '.*empty'"):
        stub_env.check_stub_env()
