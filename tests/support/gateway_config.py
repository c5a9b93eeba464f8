"""The gateway's configuration as the tests use it: ``config.toml`` as data with test tweaks
(:func:`config_data`), dotted-key changes, and a small TOML writer for subprocess runs."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STATIC_ROOT = REPO / "examples" / "public"
TEST_SECRET = "integration-test-secret-0123456789"
PLUGINS_MODULE = "tests.integration.wire_plugins"


def config_data(changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    """``config.toml`` as data, adjusted for tests, then ``changes`` applied.

    Adjustments: an absolute static root (so the data works from any folder), a short
    shutdown grace, a fast hello/clock, and two test mounts: ``/boom`` (echo that crashes on
    ``"boom"``) and ``/spy/{name}`` (echo that records the calls it gets).  ``changes`` maps
    dotted key paths to values (``{"server.unknown_path": "404"}``); ``None`` deletes the key.
    """
    with (REPO / "config.toml").open("rb") as f:
        data = tomllib.load(f)
    data["http"]["static_root"] = str(STATIC_ROOT)
    data["server"]["shutdown_timeout"] = 2.0
    data["plugins"]["hello"]["options"] = {"wait": 0.2}
    data["plugins"]["clock"]["options"]["interval"] = 0.2
    data["plugins"]["boom"] = {"path": "/boom", "use": f"{PLUGINS_MODULE}:boom_echo"}
    data["plugins"]["spy"] = {"path": "/spy/{name}", "use": f"{PLUGINS_MODULE}:Spy"}
    for path, value in (changes or {}).items():
        set_key(data, path, value)
    return data


def set_key(data: dict[str, Any], path: str, value: object) -> None:
    """Set (or with ``None`` delete) the dotted key ``path`` in ``data``, creating tables."""
    *tables, last = path.split(".")
    table = data
    for name in tables:
        table = table.setdefault(name, {})
    if value is None:
        table.pop(last, None)
    else:
        table[last] = copy.deepcopy(value)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for config dicts (tables, arrays of tables such as
    ``proxy.routes``, strings, numbers, bools, arrays)."""
    scalars = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not _is_table(v)]
    out = "\n".join(scalars) + "\n" if scalars else ""
    for k, v in data.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, Mapping):
            out += f"\n[{name}]\n" + to_toml(v, name)
        elif _is_table(v):
            out += "".join(f"\n[[{name}]]\n" + to_toml(item, name) for item in v)
    return out


def _is_table(value: object) -> bool:
    """A table, or a non-empty array of tables (``[[name]]`` sections)."""
    if isinstance(value, list | tuple):
        return bool(value) and all(isinstance(item, Mapping) for item in value)
    return isinstance(value, Mapping)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(data), encoding="utf-8")
    return path
