"""MLflow's size limits (3.17: ``mlflow/utils/validation.py``) and how we stay inside them.

Values over the limit are truncated with a visible marker rather than rejected by the server
(a rejected batch would take the other entries with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_BATCH_BYTES = 900_000  # the server rejects log-batch requests over 1e6 bytes of JSON
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

T = TypeVar("T")


def truncate(value: object, limit: int) -> str:
    """``str(value)``, cut to ``limit`` characters with a marker saying how much was cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    marker = f"...[truncated {len(text)} chars]"
    return text[: limit - len(marker)] + marker


def check_key(key: object, what: str) -> str:
    """Validate a metric/param/tag name at the boundary (MLflow would reject the whole batch)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what} name must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{what} name {key[:40]!r}... is {len(key)} chars; MLflow allows "
                         f"{MAX_KEY_LENGTH}")
    return key


def metric_value(key: str, value: object) -> float:
    """A metric value as float; NaN is kept (MLflow stores it), non-numbers are refused."""
    try:
        return float(value)  # type: ignore[arg-type]  # +-inf: MLflow clamps to +-max float
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r}: value {value!r} is not a number") from None


def chunks(items: list[T], max_n: int, size: Callable[[T], int],
           max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` with at most ``max_n`` entries and ``max_bytes`` of
    estimated payload each (an entry larger than ``max_bytes`` travels alone)."""
    batch: list[T] = []
    used = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) >= max_n or used + n > max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += n
    if batch:
        yield batch
