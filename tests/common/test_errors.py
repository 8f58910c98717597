"""The first line of an exception, as every one-line UserError quotes the library error behind it."""

from __future__ import annotations

from common.errors import first_line


def test_first_line_is_the_message_up_to_its_first_newline() -> None:
    assert first_line(ValueError("bad header\n  at byte 12\n")) == "bad header"
    assert first_line(RuntimeError("  \n  padded\nmore")) == "padded"


def test_long_lines_are_cut_and_empty_messages_give_the_type() -> None:
    assert first_line(OSError("x" * 500)) == "x" * 300
    assert first_line(OSError("y" * 500), 200) == "y" * 200
    assert first_line(KeyError()) == "KeyError" and first_line(RuntimeError("   ")) == "RuntimeError"
