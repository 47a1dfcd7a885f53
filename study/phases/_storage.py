"""Optuna's storage for the searcher, built to outlive a database restart.

Optuna's ``RDBStorage`` checks pooled connections before use (``pool_pre_ping``) on MySQL only.
On PostgreSQL, once the server restarts, the driver's next call fails ("server closed the
connection unexpectedly", raised as ``StorageInternalError``) and the study with it — measured
on the runs folder's own PostgreSQL (``study.tracking._postgres``). Here connections are checked
before use on every database, and a call that meets the database unreachable (SQLAlchemy's
``OperationalError``/``InterfaceError``: refused, closed, restarting) is tried again with backoff
for up to ``RETRY_S`` seconds. Errors about the data itself (integrity, a finished trial
updated) are raised at once, as before.

A write whose connection failed before its commit stored nothing, and trying it again stores
it once. One whose connection died *during* the commit (the server gone between receiving the
commit and acknowledging it) is ambiguous: if it had been committed, a retried trial creation
adds a second Optuna trial (left RUNNING, failed as an orphan on the next restore). That window
is one round trip; the PostgreSQL-restart fault test has not met it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

RETRY_S = 120.0  # a PostgreSQL restart takes ~1 s; a stop/start by an operator, longer
_F = TypeVar("_F", bound=Callable[..., Any])


def _unreachable(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain that says the database is out of reach, or None."""
    import sqlalchemy.exc as sa_exc

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sa_exc.IntegrityError):
            return None
        if isinstance(seen, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return seen
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__
    return None


def _retrying(method: _F, retry_s: float) -> _F:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + retry_s
        wait = 0.25
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:  # StorageInternalError from Optuna, or SQLAlchemy's own
                reason = _unreachable(e)
                if reason is None or time.monotonic() + wait > deadline:
                    raise
                logger.warning("Optuna's database is unreachable (%s); trying %s again in "
                               "%.1f s", (str(reason.orig if isinstance(reason, DBAPIError)
                                                  else reason).strip().splitlines() or
                                          [type(reason).__name__])[0][:200],
                               method.__name__, wait)
                self.engine.dispose()   # drop the pool's dead connections
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
    return call  # type: ignore[return-value]


class ResilientRDBStorage(RDBStorage):
    """``RDBStorage`` whose connections are checked before use and whose calls wait out an
    unreachable database (see the module docstring)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        engine_kwargs = {"pool_pre_ping": True, **kwargs.pop("engine_kwargs", {})}
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)


# Every storage operation: BaseStorage's public ones, and the private ones Optuna's cache in
# front of an RDBStorage (``_CachedStorage``) calls directly.
_OPERATIONS = sorted({n for n, m in vars(BaseStorage).items()
                      if not n.startswith("_") and callable(m)}
                     | {"_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids",
                        "_get_trials", "_set_trial_param"})
for _name in _OPERATIONS:
    if hasattr(RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name), RETRY_S))


def optuna_storage(url: str) -> BaseStorage | str:
    """The storage the searcher opens for ``url``: a ``ResilientRDBStorage`` for a database
    server (PostgreSQL, MySQL); SQLite's URL as it is (a file: nothing to restart)."""
    if url.startswith("sqlite"):
        return url
    return ResilientRDBStorage(url)
