"""The one boolean parser: flags (``--enable_batching=yes``), query strings (``?guided=off``) and form fields.

TF Serving's flags are absl booleans (true/t/1/yes/y and their negatives); HTTP clients also send on/off. Both sets
are accepted everywhere, case-insensitively and around whitespace, so a word means the same thing on every surface.
"""

from __future__ import annotations

import argparse

__all__ = ["TRUE_WORDS", "FALSE_WORDS", "parse_bool", "bool_arg"]

TRUE_WORDS: frozenset[str] = frozenset({"true", "t", "1", "yes", "y", "on"})
FALSE_WORDS: frozenset[str] = frozenset({"false", "f", "0", "no", "n", "off"})


def parse_bool(text: str) -> bool:
    """``True`` or ``False`` for a boolean word; ``ValueError`` naming the accepted forms otherwise."""
    value = str(text).strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def bool_arg(text: str) -> bool:
    """``parse_bool`` as an argparse ``type=``: a bad word is a usage error with the same message."""
    try:
        return parse_bool(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
