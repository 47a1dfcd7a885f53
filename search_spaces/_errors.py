"""The one error type of this package: a problem in a study file, named by file, key and reason."""

from __future__ import annotations


class SpecError(ValueError):
    """A study file is unusable. ``str(err)`` reads ``"<file>: <key.path>: <reason>"``.

    Attributes:
        source: the file as given (or ``"<dict>"`` for an in-memory spec).
        key: dotted key path (``"search.params.base_lr"``, list items as ``[i]``); ``""`` when
            the problem is the whole file (unreadable, not YAML).
        reason: what is wrong and, where possible, how to fix it.
        line: 1-based line in the file, when known.
    """

    def __init__(self, source: str, key: str, reason: str, line: int | None = None) -> None:
        self.source, self.key, self.reason, self.line = source, key, reason, line
        where = f"{source}: {key}: " if key else f"{source}: "
        at = f" (line {line})" if line is not None and key else ""
        super().__init__(f"{where}{reason}{at}")
