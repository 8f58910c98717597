"""Reading a work folder's JSON files: missing is None, unreadable or not an object is a UserError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import UserError
from common.jsonfile import read_json


def test_object_missing_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert read_json(path) is None
    path.write_text('{"a": 1}')
    assert read_json(path) == {"a": 1}
    path.write_text('{"a": ')
    with pytest.raises(UserError, match=r"^cannot read '.*r\.json': Expecting value"):
        read_json(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match=r"^cannot read '.*r\.json': 'utf-8' codec"):
        read_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match=r"^'.*r\.json' must hold a JSON object$"):
        read_json(path)
