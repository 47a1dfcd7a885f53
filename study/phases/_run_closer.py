"""The driver's side of "every run ends when its trial ends".

A trial's worker ends its own MLflow run (FINISHED, KILLED with ``stop_reason``, FAILED). But
Tune may tear a worker down before that code runs: a trial ASHA stops is ended with
``SystemExit`` inside ``report``, and a reused actor can be recycled within about 2 s. This Tune
callback ends the run from the driver at the moment Tune ends the trial, from Tune's own events
(``on_trial_complete`` / ``on_trial_error``), when the worker has not done it already — never by
a timed wait at the end of a phase. Every report carries the trial's run id
(``mlflow_run_id``), so the driver knows which run belongs to which trial.

The MLflow requests run on a thread of their own: Tune's driver loop must never wait on the
tracking server (while it waits, every trial blocks in ``report``), e.g. through an outage in
which the client retries for minutes. :meth:`RunCloser.drain` waits for them at the end.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)


def end_state(result: dict[str, Any], budget: int, error: bool) -> tuple[str, str | None]:
    """(MLflow status, ``stop_reason`` tag or None) of a trial Tune ended with ``result`` as
    its last report; ``budget``: the phase's epoch budget."""
    if error:
        return "FAILED", None
    if result.get("trial_done"):
        return "FINISHED", None  # the worker set its own stop reason
    if int(result.get("epoch", 0)) >= budget:
        return "FINISHED", "budget"
    return "KILLED", "pruned"


class RunCloser(Callback):
    """Ends a trial's MLflow run when Tune ends the trial, if it is still RUNNING.

    ``budgets``: phase -> epoch budget (a search trial stopped before its budget was pruned).
    """

    def __init__(self, tracking_uri: str, budgets: dict[str, int]) -> None:
        self.tracking_uri = tracking_uri
        self.budgets = dict(budgets)
        self.ended: list[str] = []  # the runs this callback had to end (for tests, reports)
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks: no client, no thread
        return {**self.__dict__, "_client": None, "_pool": None, "_pending": []}

    def drain(self, timeout_s: float = 300.0) -> None:
        """Wait for the runs being ended (at the end of the Tune run)."""
        wait(self._pending, timeout=timeout_s)
        self._pending = [f for f in self._pending if not f.done()]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=True)

    def _close(self, trial: Any, error: bool) -> None:
        result = trial.last_result or {}
        run_id = result.get("mlflow_run_id")
        if not run_id:
            return  # the trial never reported: no run, or the worker ended it
        phase = str(result.get("phase") or "search")
        status, reason = end_state(result, self.budgets.get(phase, 0), error)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-closer")
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._end, run_id, status, reason, str(trial)))

    def _end(self, run_id: str, status: str, reason: str | None, trial: str) -> None:
        try:
            from study import tracking

            if self._client is None:
                self._client = tracking.client_for(self.tracking_uri)
            if self._client.get_run(run_id).info.status != "RUNNING":
                return
            if reason is not None:
                self._client.set_tag(run_id, "stop_reason", reason)
            self._client.set_terminated(run_id, status=status)
            self.ended.append(run_id)
        except Exception as e:  # noqa: BLE001 -- the study's end closes it as a last resort
            log.warning("could not end MLflow run %s of trial %s: %s", run_id, trial, e)
