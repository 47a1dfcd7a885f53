"""Hyperparameter declarations: :class:`ParamSpec` and the parser of ``search.params``.

In a study file each entry of ``search.params`` is keyed by a hyperparameter name (a
``RegimeConfig`` or ``TrainConfig`` field) and holds one declaration, or a list of declarations
for disjoint sets of variants (e.g. FTED's t0 searched around 1e-3, the others' base LR around
1e-4)::

    base_lr:
      - {role: scientific, low: 1.0e-5, high: 1.0e-3, log: true, variants: [RI, FE, AllFT]}
      - {role: scientific, low: 1.0e-4, high: 1.0e-2, log: true, variants: [FTED]}
    lam: {role: scientific, low: 0.0, high: 6.0, variants: [FTED]}
    momentum: {role: fixed, value: 0.9}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ._errors import SpecError
from ._names import HYPERPARAMETERS, ROLES, canonical_variant
from ._reader import Section, describe, hint, join

Role = Literal["scientific", "nuisance", "fixed"]
Kind = Literal["float", "int", "categorical", "fixed"]
_KEYS = ("role", "value", "low", "high", "log", "choices", "variants")


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter for some variants: a constant (``kind="fixed"``) or a search range.

    Attributes:
        name: the ``RegimeConfig`` / ``TrainConfig`` field it sets.
        role: ``"scientific"`` (what the study measures the effect of), ``"nuisance"`` (tuned so
            that the comparison is fair) or ``"fixed"`` (held constant); logged as a tag.
        target: ``"regime"`` (RegimeConfig) or ``"train"`` (TrainConfig).
        kind: ``"float"`` / ``"int"`` (``low``..``high``, ``log`` for log-uniform),
            ``"categorical"`` (``choices``) or ``"fixed"`` (``value``).
        variants: canonical variant names it applies to; ``None`` = every variant.
    """

    name: str
    role: Role
    target: Literal["regime", "train"]
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None
    variants: tuple[str, ...] | None = None

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def applies_to(self, variant: str) -> bool:
        return self.variants is None or canonical_variant(variant) in self.variants

    def to_dict(self) -> dict[str, Any]:
        """The declaration as written in a study file (without the name)."""
        out: dict[str, Any] = {"role": self.role}
        if self.kind == "fixed":
            out["value"] = self.value
        elif self.kind == "categorical":
            out["choices"] = list(self.choices or ())
        else:
            out.update(low=self.low, high=self.high, log=self.log)
        if self.variants is not None:
            out["variants"] = list(self.variants)
        return out


def parse_params(section: Section, study_variants: tuple[str, ...]) -> tuple[ParamSpec, ...]:
    """All declarations under ``search.params`` (``section``), checked."""
    out: list[ParamSpec] = []
    for name, raw in section.data.items():
        if name not in HYPERPARAMETERS:
            raise section.error(name, f"unknown hyperparameter {name!r}"
                                      f"{hint(name, HYPERPARAMETERS)}")
        path, line = section.key(name), section.lines.get(name)
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise SpecError(section.source, path, "an empty list declares nothing", line)
        specs = [
            _parse_one(name, Section(section.source, item,
                                     join(path, i) if isinstance(raw, list) else path,
                                     _KEYS, line=line))
            for i, item in enumerate(items)
        ]
        _check_disjoint(specs, section.source, path, line)
        for spec in specs:
            _check_fted_only(spec, section.source, path, line, study_variants)
        out += specs
    return tuple(out)


def _parse_one(name: str, s: Section) -> ParamSpec:
    domain = HYPERPARAMETERS[name]
    role = s.string("role", choices=ROLES)
    variants = _variants(s)
    forms = [f for f, keys in (("value", ("value",)), ("range", ("low", "high", "log")),
                               ("choices", ("choices",))) if any(s.has(k) for k in keys)]
    if len(forms) != 1:
        raise SpecError(s.source, s.path, "give exactly one of value (role fixed), low/high "
                        "(a range) or choices" + (f"; got {' and '.join(forms)}" if forms else ""),
                        s.line)
    form = forms[0]
    if (role == "fixed") != (form == "value"):
        why = ("role fixed takes a value, not a search range" if role == "fixed" else
               f"role {role} is searched: give low/high or choices (or use role: fixed)")
        raise s.error("role", why)
    common = {"name": name, "role": role, "target": domain.target, "variants": variants}
    if form == "value":
        value = s.raw("value")
        _check_value(s, "value", domain.check(value))
        return ParamSpec(kind="fixed", value=_plain(value, domain.type), **common)
    if form == "choices":
        return ParamSpec(kind="categorical", choices=_choices(s, domain), **common)
    if not domain.numeric:
        raise SpecError(s.source, s.path, f"{name} is categorical ({domain.type}): give "
                        "choices, not low/high", s.line)
    low, high = s.raw("low"), s.raw("high")
    for key, value in (("low", low), ("high", high)):
        _check_value(s, key, domain.check(value))
    log = s.boolean("log", False)
    where = s.lines.get("low", s.line)
    if low > high:
        raise SpecError(s.source, s.path, f"low {low:g} > high {high:g}", where)
    if low == high:
        raise SpecError(s.source, s.path, f"low == high ({low:g}): a range of one value; use "
                        "role: fixed with value", where)
    if log and low <= 0:
        raise SpecError(s.source, s.path, f"log scale needs low > 0, got low {low:g}", where)
    if domain.type == "float":
        low, high = float(low), float(high)
    return ParamSpec(kind=domain.type, low=low, high=high, log=log, **common)  # type: ignore


def _check_value(s: Section, key: str, reason: str | None) -> None:
    if reason:
        raise SpecError(s.source, s.path, f"{key}: {reason}", s.lines.get(key, s.line))


def _plain(value: Any, type_: str) -> Any:
    return float(value) if type_ == "float" else value


def _choices(s: Section, domain: Any) -> tuple[Any, ...]:
    raw = s.raw("choices")
    if not isinstance(raw, list):
        raise s.error("choices", f"expected a list, got {describe(raw)}")
    for i, item in enumerate(raw):
        reason = domain.check(item)
        if reason:
            raise SpecError(s.source, join(s.key("choices"), i), reason, s.lines.get("choices"))
    values = tuple(_plain(v, domain.type) for v in raw)
    if len(set(values)) != len(values) or len(values) < 2:
        raise s.error("choices", f"need at least 2 distinct choices, got {raw!r} (a single "
                                 "value is role: fixed with value)")
    return values


def _variants(s: Section) -> tuple[str, ...] | None:
    if not s.has("variants"):
        return None
    names = s.string_list("variants")
    if not names:
        raise s.error("variants", "an empty list restricts to no variant; omit the key to "
                                  "apply to every variant")
    out = []
    for i, name in enumerate(names):
        try:
            out.append(canonical_variant(name))
        except ValueError as e:
            raise SpecError(s.source, join(s.key("variants"), i), str(e),
                            s.lines.get("variants")) from None
    if len(set(out)) != len(out):
        raise s.error("variants", f"a variant is listed twice: {names}")
    return tuple(out)


def _covered(spec: ParamSpec, study_variants: tuple[str, ...]) -> set[str]:
    return set(study_variants) if spec.variants is None else set(spec.variants)


def _check_disjoint(specs: list[ParamSpec], source: str, path: str,
                    line: int | None) -> None:
    if len(specs) < 2:
        return
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.variants is None:
            raise SpecError(source, join(path, i), "in a list of declarations every entry "
                            "needs its own `variants`", line)
        both = seen & set(spec.variants)
        if both:
            raise SpecError(source, join(path, i), f"declared twice for "
                            f"{', '.join(sorted(both))}; the entries' variants must not overlap",
                            line)
        seen |= set(spec.variants)


def _check_fted_only(spec: ParamSpec, source: str, path: str, line: int | None,
                     study_variants: tuple[str, ...]) -> None:
    if not (HYPERPARAMETERS[spec.name].fted_only and spec.searched):
        return
    others = sorted(_covered(spec, study_variants) - {"FTED"})
    if others:
        raise SpecError(source, path, f"{spec.name} only affects FTED; searching it for "
                        f"{', '.join(others)} wastes trials: add `variants: [FTED]`", line)

