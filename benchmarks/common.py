"""Shared benchmark helpers: machine description, medians, markdown sections of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import re
import shlex
import sys
from pathlib import Path

from common.atomic import atomic_path
from common.machine import machine  # noqa: F401  (re-exported: the benchmarks call benchmarks.common.machine)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"



def today() -> str:
    return datetime.date.today().isoformat()


def command_line(module: str, argv: list[str] | None) -> str:
    """The exact command a benchmark ran as: ``python -m <module> <args>`` (``argv`` None: this process's)."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def section_head(title: str, command: str, machine_note: str = "") -> list[str]:
    """The first lines of every benchmark section: title, exact command, machine and date."""
    return [f"## {title}", "", f"- Command: `{command}`", f"- Machine: {machine()}; {machine_note}date {today()}"]


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(doc) as tmp:
        tmp.write_text(text)
