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
commit and acknowledging it) is ambiguous. For setting values that is harmless (the same value
again); a trial creation tried again would add a second Optuna trial (left RUNNING, counted by
its group's budget). So every trial is created with a key of its own (system attribute
``tlstudy:create_key``), and a creation tried again — by this module or by Optuna's own
five-fold retry — first looks for the trial its key already made, in the same transaction that
locks the study row, and returns that one.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
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


CREATE_KEY = "tlstudy:create_key"


class ResilientRDBStorage(RDBStorage):
    """``RDBStorage`` whose connections are checked before use, whose calls wait out an
    unreachable database, and whose trial creation is idempotent (see the module
    docstring)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        engine_kwargs = {"pool_pre_ping": True, **kwargs.pop("engine_kwargs", {})}
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id  # retried inside

    def _create_new_trial(self, study_id: int,
                          template_trial: FrozenTrial | None = None) -> FrozenTrial:
        return _create_retried(self, study_id, _keyed(template_trial))

    def _get_prepared_new_trial(self, study_id: int, template_trial: FrozenTrial | None,
                                session: Any) -> Any:
        key = (template_trial.system_attrs.get(CREATE_KEY)
               if template_trial is not None else None)
        if key is not None:
            made = (session.query(models.TrialModel)
                    .join(models.TrialSystemAttributeModel,
                          models.TrialSystemAttributeModel.trial_id
                          == models.TrialModel.trial_id)
                    .filter(models.TrialModel.study_id == study_id,
                            models.TrialSystemAttributeModel.key == CREATE_KEY,
                            models.TrialSystemAttributeModel.value_json == json.dumps(key))
                    .one_or_none())
            if made is not None:   # an earlier try committed it: that trial, not a second one
                logger.warning("Optuna trial %d was created by an attempt whose answer was "
                               "lost; not creating it twice", made.number)
                return made
        return super()._get_prepared_new_trial(study_id, template_trial, session)


def _keyed(template: FrozenTrial | None) -> FrozenTrial:
    """``template`` (or a fresh RUNNING trial's) with a creation key of its own."""
    if template is None:
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=datetime.datetime.now(), datetime_complete=None,
                               params={}, distributions={}, user_attrs={}, system_attrs={},
                               intermediate_values={}, trial_id=-1)
    else:
        template = copy.deepcopy(template)
    template.system_attrs = {**template.system_attrs, CREATE_KEY: uuid.uuid4().hex}
    return template


# Every storage operation: BaseStorage's public ones, and the private ones Optuna's cache in
# front of an RDBStorage (``_CachedStorage``) calls directly.
_OPERATIONS = sorted({n for n, m in vars(BaseStorage).items()
                      if not n.startswith("_") and callable(m)}
                     | {"_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids",
                        "_get_trials", "_set_trial_param"})
for _name in _OPERATIONS:
    if hasattr(RDBStorage, _name) and _name not in vars(ResilientRDBStorage):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name), RETRY_S))
_create_retried = _retrying(RDBStorage._create_new_trial, RETRY_S)  # with a keyed template


def optuna_storage(url: str) -> BaseStorage | str:
    """The storage the searcher opens for ``url``: a ``ResilientRDBStorage`` for a database
    server (PostgreSQL, MySQL); SQLite's URL as it is (a file: nothing to restart)."""
    if url.startswith("sqlite"):
        return url
    return ResilientRDBStorage(url)
