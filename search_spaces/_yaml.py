"""YAML reading for study files: safe, with line numbers kept and two PyYAML traps closed.

* ``1e-4`` is a float here (PyYAML's YAML 1.1 resolver reads it as the *string* "1e-4"
  because it lacks a dot; learning rates are written that way).
* A key given twice in one mapping is an error (PyYAML silently keeps the last one).

Mappings come back as :class:`LinedDict`, a ``dict`` that also knows the line of each key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ._errors import SpecError

_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_MERGE = "tag:yaml.org,2002:merge"


class LinedDict(dict):
    """A mapping from YAML; ``lines[key]`` is the 1-based line where ``key`` was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LinedDict:
    own = sum(1 for k, _ in node.value if k.tag != _MERGE)
    loader.flatten_mapping(node)
    merged = len(node.value) - own  # entries pulled in by '<<' come first and may be overridden
    out, written = LinedDict(), set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if i >= merged:
            if key in written:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
            written.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def parse_yaml(text: str, source: str) -> Any:
    """Parse ``text``; errors become :class:`SpecError` naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise SpecError(source, "", f"{where}invalid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise SpecError(source, "", f"invalid YAML: {e}") from None
    except RecursionError:  # e.g. "[[[[…" thousands deep: PyYAML recurses per level
        raise SpecError(source, "", "invalid YAML: nested too deeply") from None


def read_yaml(path: Path, source: str) -> Any:
    """Read and parse a study file; unreadable files become :class:`SpecError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(source, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SpecError(source, "", f"cannot read the file: {e.strerror or e}") from None
    return parse_yaml(text, source)
