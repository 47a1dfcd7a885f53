"""Collecting every problem in a dataset before refusing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainables.records import DatasetError


@dataclass(frozen=True)
class Problem:
    """One bad input: file, 1-based row (None for whole-file problems), field, reason."""

    file: str
    row: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        return str(DatasetError(self.reason, file=self.file, row=self.row, field=self.field))


class DatasetProblems(DatasetError):
    """Raised when a dataset has problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(str(p) for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        first = self.problems[0]
        super().__init__(f"{len(self.problems)} problem(s) in the dataset:\n  {shown}{more}")
        self.file, self.row, self.field = first.file, first.row, first.field


@dataclass
class ProblemLog:
    """Accumulates problems and deliberate skips (counted, never silent)."""

    problems: list[Problem] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, file: Path | str, row: int | None, field_: str | None, reason: str) -> None:
        self.problems.append(Problem(str(file), row, field_, reason))

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def raise_if_any(self) -> None:
        if self.problems:
            raise DatasetProblems(self.problems)
