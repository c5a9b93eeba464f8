"""Build frozen dataclasses from untyped TOML data, naming the key path of every error.

The same builder validates the gateway's own tables and each plugin's ``options``, so a plugin
author gets ``plugins.chat.options.max_members: expected int, got str`` for free by declaring a
frozen dataclass.  Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``,
``tuple[X, ...]`` (from a TOML array), ``dict[str, X]``, ``X | None``, ``Any`` and nested
dataclasses.  Bounds come from field metadata: ``field(default=1, metadata={"min": 1})``.
A dataclass's ``__post_init__`` may raise :class:`ConfigError` naming one of its own fields
(``listen[0]``): the error is reported under the table's path (``server.listen[0]``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from gateway.errors import ConfigError, ConfigErrors

T = TypeVar("T")


class Errors:
    """Collects :class:`ConfigError` s so one pass reports every problem, not only the
    first: :meth:`attempt` runs a check and returns its result, or ``fallback`` after noting
    its error(s); :meth:`check` raises them all at the end."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def attempt(self, check: Callable[[], T], fallback: T) -> T:
        try:
            return check()
        except ConfigError as exc:
            self.add(exc)
            return fallback

    def add(self, exc: ConfigError) -> None:
        self.found.extend(exc.errors if isinstance(exc, ConfigErrors) else (exc,))

    def check(self) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise ConfigErrors(self.found)


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "string", dict: "table"}


def join(path: str, key: str | int) -> str:
    """``join("plugins.chat", "path") == "plugins.chat.path"``; list indexes use brackets."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """The TOML-ish name of a value's type, for error messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list | tuple):
        return "array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def build(cls: type[T], data: object, path: str = "", *, ignore: frozenset[str] = frozenset()) -> T:
    """Return ``cls(**data)`` after checking every key and value against ``cls``'s fields.

    Unknown keys are errors (a typo must never be silently ignored); missing keys without a
    default are errors; ``ignore`` names keys the caller handles itself.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected table, got {describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    errors = Errors()  # every bad key of the table, not only the first
    for key in data:
        if key not in fields and key not in ignore:
            known = ", ".join(sorted(fields))
            errors.add(ConfigError(join(path, key), f"unknown key (known keys: {known})"))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.add(ConfigError(join(path, name), "missing required key"))
            continue
        try:
            value = convert(hints[name], data[name], join(path, name))
            _check_bounds(f, value, join(path, name))
        except ConfigError as exc:
            errors.add(exc)
            continue
        kwargs[name] = value
    errors.check()
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a __post_init__ that parses a field names it, not the table
        raise _under(path, exc) from None


def _under(path: str, exc: ConfigError) -> ConfigError:
    if isinstance(exc, ConfigErrors):
        return ConfigErrors([_under(path, e) for e in exc.errors])
    return ConfigError(join(path, exc.path) if exc.path else path, exc.problem)


def convert(tp: Any, value: object, path: str) -> Any:
    """Check ``value`` against the type ``tp`` and return it in that type's shape."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            shown = ", ".join(repr(c) for c in choices)
            raise ConfigError(path, f"expected one of {shown}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert(options[0], value, path)
        errors = []
        for option in options:
            try:
                return convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(path, " or ".join(errors))
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected array, got {describe(value)}")
        item_type = args[0] if args else Any
        return tuple(convert(item_type, v, join(path, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected table, got {describe(value)}")
        item_type = args[1] if args else Any
        return {str(k): convert(item_type, v, join(path, str(k))) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    return _convert_scalar(tp, value, path)


def _convert_scalar(tp: Any, value: object, path: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected bool, got {describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected int, got {describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected float, got {describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected string, got {describe(value)}")
        return value
    raise TypeError(f"{path}: unsupported option type {tp!r}")


def _check_bounds(f: dataclasses.Field[Any], value: object, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low = f.metadata.get("min")
    high = f.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(path, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(path, f"must be <= {high}, got {value}")
