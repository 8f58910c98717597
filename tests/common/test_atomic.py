"""Atomic writes: the final path holds the old content or the whole new one, never a half-written file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.atomic import atomic_dir, atomic_path, write_json


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "a.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final and not final.exists()
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and final.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert final.read_bytes() == b"new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["a.bin"]  # no temporary file left


def test_atomic_dir_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path: Path) -> None:
    final = tmp_path / "d"
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
    assert (final / "x").read_text() == "1"
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "y").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in final.iterdir()) == ["x"]
    with atomic_dir(final) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # neither the temporary nor the old folder remains


def test_write_json_is_sorted_indented_and_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    first = path.read_bytes()
    assert first == b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    write_json(path, {"a": [1, 2], "b": 1})
    assert path.read_bytes() == first and json.loads(first) == {"a": [1, 2], "b": 1}
