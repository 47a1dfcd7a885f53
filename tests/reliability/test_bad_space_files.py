"""Fuzz/property tests: damaged study (space) files are refused with a :class:`SpecError`.

Three kinds of damage, each starting from a shipped file (``smoke``, ``quick``, ``paper``):
random bytes; the text cut, lines dropped, duplicated or re-indented; and a value anywhere in
the parsed tree replaced by a hostile one (NaN, ±inf, 10**400, negative, empty, unicode, a
list, a mapping, null), a key deleted or an unknown key added. The property: ``load_spec``
either returns a spec or raises ``SpecError`` whose message starts with the file's path —
never another exception type.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import SpecError, StudySpec, load_spec, shipped_path
from tests.reliability._tally import tally

EXAMPLES = int(os.environ.get("TLSTUDY_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SHIPPED = ["smoke", "quick", "paper"]

hostile = st.one_of(
    st.sampled_from([None, math.nan, math.inf, -math.inf, 10**400, -(10**400), -1, 0, 1e308,
                     "", "  ", "é漢字😀", "NaN", "1e-4", True, False, [], {}, [None], {"x": 1},
                     "../../etc/passwd", "\x00", "x" * 5000, 2**63, -0.0, "null", "[1, 2"]),
    st.integers(), st.floats(), st.text(max_size=20),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed YAML tree (list items by index)."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, prefix + (i,))
    return out


def _parent(tree: Any, path: tuple) -> Any:
    for k in path[:-1]:
        tree = tree[k]
    return tree


def _yaml_text(tree: Any) -> str:
    text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False, width=200)
    return text.replace("!!python/", "")  # never produced by safe_dump; belt and braces


def _check(text: bytes | str, name: str) -> str:
    """Write ``text`` as a space file and load it; assert the property; return the outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spaces ü" / f"{name}.yaml"
        path.parent.mkdir()
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(text)
        try:
            spec = load_spec(path)
        except SpecError as exc:
            assert str(exc).startswith(str(path)), str(exc)
            assert exc.reason.strip(), str(exc)
            return "refused"
    assert isinstance(spec, StudySpec)
    return "accepted"


def _count(kind: str, outcome: str) -> None:
    tally[f"bad space files tried ({kind})"] += 1
    tally[f"bad space files {outcome} ({kind})"] += 1


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_space_file_are_refused(data):
    _count("bytes", _check(data, "random"))


@FUZZ
@given(base=st.sampled_from(SHIPPED), cut=st.floats(0, 1), drop=st.integers(0, 400),
       dup=st.integers(0, 400), indent=st.integers(0, 400), how=st.integers(0, 3))
def test_cut_and_shuffled_space_files_are_refused(base, cut, drop, dup, indent, how):
    lines = shipped_path(base).read_text(encoding="utf-8").splitlines()
    if how == 0:
        text = "\n".join(lines)[: int(len("\n".join(lines)) * cut)]
    elif how == 1:
        del lines[drop % len(lines)]
        text = "\n".join(lines)
    elif how == 2:
        lines.insert(dup % len(lines), lines[dup % len(lines)])
        text = "\n".join(lines)
    else:
        i = indent % len(lines)
        lines[i] = "   " + lines[i]
        text = "\n".join(lines)
    _count("text", _check(text, base))


@FUZZ
@given(base=st.sampled_from(SHIPPED), pick=st.integers(0, 10_000), value=hostile,
       op=st.sampled_from(["replace", "replace", "delete", "unknown_key"]))
def test_hostile_values_anywhere_in_a_space_file_are_refused(base, pick, value, op):
    tree = yaml.safe_load(shipped_path(base).read_text(encoding="utf-8"))
    paths = _paths(tree)
    path = paths[pick % len(paths)]
    parent = _parent(tree, path)
    if op == "replace":
        parent[path[-1]] = value
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent["unknwon_key_ü"] = value
    else:
        parent.append(value)
    try:
        text = _yaml_text(tree)
    except (yaml.YAMLError, OverflowError, ValueError):
        return
    _count("values", _check(text, base))


_LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else 'x, x, x'}]\n"
                  for p, a in zip(["", *"abcdefg"], "abcdefgh", strict=True))
CRAFTED = {
    "nested lists 3000 deep": "name: x\nroi: " + "[" * 3000 + "]" * 3000 + "\n",
    "nested mappings 3000 deep": "name: x\nroi: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "alias bomb under a known key": _LAUGHS.replace("a: &a", "description: &a")
    .replace("*a", "*a") + "name: x\n",
    "python object tag": "name: !!python/object/apply:os.system ['echo hi']\n",
    "utf-16 text": "name: x\n".encode("utf-16"),
    "only a comment": "# nothing\n",
    "a bare scalar": "42\n",
    "a list at the top": "- name\n- x\n",
    "tab indentation": "name: x\nroi:\n\tsize: 64\n",
    "duplicate key": "name: x\nname: y\n",
}


def test_crafted_space_files_are_refused():
    for label, text in CRAFTED.items():
        assert _check(text, "crafted") == "refused", label
        _count("crafted", "refused")
