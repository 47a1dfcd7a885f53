"""Typed, key-path-aware access to a parsed study file.

:class:`Section` wraps one mapping of the file. It rejects keys it does not know (with a
"did you mean" hint) as soon as it is opened, so a typo is reported as a typo rather than as the
missing key it was meant to be; every getter checks type and range and raises
:class:`~search_spaces.SpecError` naming the file, the dotted key path and the reason.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable
from typing import Any

from ._errors import SpecError

MISSING: Any = object()


def describe(value: Any) -> str:
    """``"str 'abc'"``, ``"list [1, 2]"``: a value with its YAML-ish type, for messages."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            type(None): "null"}.get(type(value), "mapping" if isinstance(value, dict) else
                                    type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def suggest(word: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(str(word), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def hint(word: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for a near miss, else the list of known words."""
    return suggest(word, known) or f"; known: {', '.join(sorted(known))}"


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Section:
    """One mapping of a study file at key path ``path`` (``""`` for the top level)."""

    def __init__(self, source: str, data: Any, path: str, known: Collection[str],
                 *, line: int | None = None) -> None:
        self.source, self.path = source, path
        if not isinstance(data, dict):
            raise SpecError(source, path or "(top level)",
                            f"expected a mapping of keys to values, got {describe(data)}", line)
        self.data = data
        self.lines: dict[Any, int] = getattr(data, "lines", {})
        self.line = line
        for key in data:
            if not isinstance(key, str):
                raise self.error(key, f"keys must be strings, got {describe(key)}")
            if key not in known:
                raise self.error(key, f"unknown key {key!r}{hint(key, known)}")

    # ---------------------------------------------------------------- plumbing

    def key(self, name: str | int) -> str:
        return join(self.path, name)

    def error(self, name: Any, reason: str) -> SpecError:
        return SpecError(self.source, join(self.path, str(name)), reason,
                         self.lines.get(name, self.line))

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = MISSING) -> Any:
        if name in self.data:
            return self.data[name]
        if default is MISSING:
            raise SpecError(self.source, self.key(name), "missing required key", self.line)
        return default

    def section(self, name: str, known: Collection[str], *, required: bool = True) -> Section:
        value = self.raw(name, MISSING if required else {})
        return Section(self.source, value, self.key(name), known, line=self.lines.get(name))

    # ---------------------------------------------------------------- typed getters

    def integer(self, name: str, default: Any = MISSING, *, min: int | None = None,
                nullable: bool = False) -> Any:
        value = self.raw(name, default)
        if value is None and nullable:
            return None
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            null = " or null" if nullable else ""
            raise self.error(name, f"expected an integer{null}, got {describe(value)}")
        if min is not None and value < min:
            raise self.error(name, f"must be >= {min}, got {value}")
        return value

    def number(self, name: str, default: Any = MISSING, *, gt: float | None = None,
               ge: float | None = None, lt: float | None = None, le: float | None = None,
               nullable: bool = False) -> Any:
        value = self.raw(name, default)
        if value is None and nullable:
            return None
        reason = check_number(value, gt=gt, ge=ge, lt=lt, le=le)
        if reason:
            raise self.error(name, reason)
        return float(value)

    def boolean(self, name: str, default: Any = MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {describe(value)}")
        return value

    def string(self, name: str, default: Any = MISSING, *, choices: Collection[str] = (),
               nullable: bool = False) -> Any:
        value = self.raw(name, default)
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {describe(value)}")
        if choices and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}"
                                   f"{suggest(value, choices)}")
        return value

    def string_list(self, name: str, default: Any = MISSING) -> list[str]:
        value = self.raw(name, default)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list, got {describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise SpecError(self.source, join(self.key(name), i),
                                f"expected a name, got {describe(item)}", self.lines.get(name))
        return value


def check_number(value: Any, *, gt: float | None = None, ge: float | None = None,
                 lt: float | None = None, le: float | None = None) -> str | None:
    """``None`` if ``value`` is a finite number within the bounds, else the reason it is not."""
    if not is_number(value):
        return f"expected a number, got {describe(value)}"
    try:
        float(value)
    except OverflowError:
        return f"number too large: {describe(value)}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    for bound, ok, word in ((gt, lambda b: value > b, ">"), (ge, lambda b: value >= b, ">="),
                            (lt, lambda b: value < b, "<"), (le, lambda b: value <= b, "<=")):
        if bound is not None and not ok(bound):
            return f"must be {word} {bound:g}, got {value:g}"
    return None
