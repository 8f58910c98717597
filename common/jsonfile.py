"""Reading the small JSON files of a work folder: one place for the 'missing / unreadable' rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import UserError


def read_json(path: Path) -> dict[str, Any] | None:
    """``path`` as a JSON object; None when it does not exist; unreadable or not an object: UserError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"'{path}' must hold a JSON object")
    return data
