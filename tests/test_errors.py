"""``gateway.errors``: the tree its docstring draws is the tree its classes form."""

from __future__ import annotations

import inspect
import re

import pytest

from gateway import errors, upgrade
from gateway.core.decisions import Reject
from gateway.proxy import body, forward


def _drawn_tree() -> dict[str, str | None]:
    """``{class name: base name}`` from the docstring's indented drawing (``None``: a root)."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::", 1)[1].split("\n\n", 2)[1]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in drawing.splitlines():
        match = re.match(r"( *)([A-Z]\w+)( {2,}|$)", line)
        if match is None:
            continue  # a continuation line of a description
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def _defined() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
    }


def test_every_exception_of_the_module_is_drawn_under_its_base() -> None:
    drawn = _drawn_tree()
    defined = _defined()
    assert set(drawn) == set(defined)
    for name, cls in defined.items():
        base = drawn[name]
        if base is None:
            assert cls.__bases__ == (Exception,), name
        else:
            assert cls.__bases__[0] is defined[base], name


def test_there_is_one_refused() -> None:
    # The handshake's and the proxy's refusals are one class (an answer instead of service).
    assert upgrade.Refused is errors.Refused
    assert body.Refused is errors.Refused
    assert forward.Refused is errors.Refused
    refusal = errors.Refused(Reject(413, "request body too large"))
    assert isinstance(refusal, errors.GatewayError)
    assert refusal.reject.status == 413
    assert str(refusal) == "413 request body too large"


@pytest.mark.parametrize("name", sorted(_defined()))
def test_each_exception_has_a_docstring(name: str) -> None:
    assert (_defined()[name].__doc__ or "").strip()
