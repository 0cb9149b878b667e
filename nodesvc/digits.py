"""Whole numbers typed by people or sent by peers, checked before int() reads them."""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """0-9 only. str.isdigit() also takes superscripts such as "²", which int() refuses
    (a traceback at start, or a 500 for a forged header), and other scripts' digits."""
    return text.isascii() and text.isdigit()
