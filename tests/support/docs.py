"""Code blocks of the project's Markdown docs, for the tests that check them."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(path: str | Path, language: str) -> list[str]:
    """Every fenced block tagged ``language`` in ``path`` (relative to the repo), in order."""
    text = (REPO / path).read_text(encoding="utf-8")
    return [m[2] for m in _FENCE.finditer(text) if m[1] == language]


def block(path: str | Path, language: str) -> str:
    """The one block tagged ``language`` (fails if there is not exactly one)."""
    found = blocks(path, language)
    assert len(found) == 1, f"{path}: {len(found)} ```{language} blocks, expected one"
    return found[0]
