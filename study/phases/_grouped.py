"""One Tune run over many (variant, split) groups: an Optuna study and an ASHA per group.

Each group (a variant on an outer split) has its own Optuna study in the RDB storage
(``<study>/<variant>/split<k>``), TPE-seeded per group, and its own ASHA brackets — trials
only compete with trials of the same variant on the same split. Running every group in one
Tune run keeps all cores busy (instead of one small Tuner per group, each paying Tune's
start-up).

Trials that ASHA stops before the epoch budget reach Optuna as **PRUNED** (Ray's stock
``OptunaSearch`` tells them COMPLETE with their partial metric, which biases TPE toward fast
starters); trials that ran to the budget or stopped early on their own patience are COMPLETE
with their best validation loss; crashed trials are FAIL.

A warm start (a re-study) gives each group configurations to evaluate first: they are
enqueued (``Study.enqueue_trial``) when the group's study is created, so Optuna hands them out
before TPE proposes anything, and they count against the group's budget like any trial.
"""

from __future__ import annotations

import logging
import pickle
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.phases._optuna_links import trial_links
from study.phases._storage import optuna_storage

log = logging.getLogger(__name__)

METRIC = "best_val_loss"
ORPHANED = "orphaned"
MODE = "min"


@dataclass(frozen=True)
class Group:
    """One variant on one outer split, with its trial budget and its search space.

    ``suggest(trial) -> dict`` draws the searched values from an Optuna trial; ``fixed`` are
    constants merged into every config of the group.
    """

    variant: str
    split: int
    budget: int
    suggest: Callable[[optuna.Trial], dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.variant}/split{self.split}"


def group_key(config: dict[str, Any]) -> str:
    return f"{config['variant']}/split{config['split']}"


class GroupedOptunaSearcher(Searcher):
    """Optuna TPE per group, state in an RDB storage (resumable, extendable).

    ``warm_start``: group key -> configurations (searched values) to evaluate first in that
    group, enqueued once when the group's study is new; ``study_attrs``: user attributes
    stored on every group study (e.g. the MLflow parent run it belongs to); ``seed_salt``:
    mixed into each group's TPE seed, so that a re-study does not replay the random start-up
    proposals of the execution it continues."""

    def __init__(self, groups: Sequence[Group], *, storage_url: str, study_prefix: str,
                 seed: int, max_epochs: int,
                 warm_start: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 study_attrs: Mapping[str, str] | None = None, seed_salt: str = "") -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._groups = {g.key: g for g in groups}
        self._storage_url = storage_url
        self._storage: optuna.storages.BaseStorage | str | None = None  # opened on first use
        self._prefix = study_prefix
        self._seed = seed
        self._max_epochs = max_epochs
        self._live: dict[str, tuple[str, int]] = {}  # tune trial id -> (group, optuna number)
        self._studies: dict[str, optuna.Study] = {}
        self._trials: dict[str, optuna.Trial] = {}
        self._reported: dict[str, set[int]] = {}
        self._warm = {k: [dict(c) for c in v] for k, v in (warm_start or {}).items()}
        self._attrs = dict(study_attrs or {})
        self._salt = seed_salt

    # ----------------------------------------------------------------------------- studies
    def study_name(self, key: str) -> str:
        return f"{self._prefix}/{key}"

    def study(self, key: str) -> optuna.Study:
        if key not in self._studies:
            if self._storage is None:  # one engine for every group; waits out a DB restart
                self._storage = optuna_storage(self._storage_url)
            sampler = optuna.samplers.TPESampler(
                seed=(self._seed * 1_000_003 + zlib.crc32((self._salt + key).encode())) % 2**31)
            study = optuna.create_study(
                study_name=self.study_name(key), storage=self._storage, sampler=sampler,
                direction="minimize", load_if_exists=True)
            if not study.get_trials(deepcopy=False):  # new: seed it once (not on a resume)
                with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([METRIC])  # optuna-dashboard's objective name
                for name, value in self._attrs.items():
                    study.set_user_attr(name, value)
                for config in self._warm.get(key, []):
                    study.enqueue_trial(config, user_attrs={"warm_start": True})
            self._studies[key] = study
        return self._studies[key]

    def _asked(self, key: str) -> list[optuna.trial.FrozenTrial]:
        """A group's trials, less the enqueued ones not handed out yet (WAITING) and those a
        killed driver left behind (``orphaned``: asked, never run, re-asked on resume)."""
        return [t for t in self.study(key).get_trials(deepcopy=False)
                if t.state != optuna.trial.TrialState.WAITING
                and not t.user_attrs.get(ORPHANED)]

    def unfinished(self, key: str, budget: int) -> bool:
        """True while a group has budget left or trials still running (e.g. after Ctrl-C)."""
        trials = self._asked(key)
        running = any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        return running or len(trials) < budget

    def started(self, key: str) -> int:
        """Trials of a group already asked for (finished or running), from the storage."""
        return len(self._asked(key))

    # ----------------------------------------------------------------------------- Searcher
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        open_groups = [(self.started(k), k) for k, g in self._groups.items()
                       if self.started(k) < g.budget]
        if not open_groups:
            return Searcher.FINISHED
        _, key = min(open_groups)  # the least explored group first: groups advance together
        group = self._groups[key]
        ot = self.study(key).ask()
        values = group.suggest(ot)
        self._live[trial_id] = (key, ot.number)
        self._trials[trial_id] = ot
        return {"variant": group.variant, "split": group.split, "optuna_trial": ot.number,
                **group.fixed, **values}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot = self._trial(trial_id)
        if ot is not None and METRIC in result and "epoch" in result:
            step = int(result["epoch"])
            if step not in self._reported.setdefault(trial_id, set()):
                self._reported[trial_id].add(step)
                try:
                    ot.report(float(result[METRIC]), step)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # resumed from a Tune state older than the storage: the trial had ended
                    # (told) after Tune's last save, and Tune runs it again from its
                    # checkpoint; Optuna already knows its end (as on_trial_complete)
                    log.info("%s: Optuna trial %d already finished; epoch %d not reported "
                             "again", self._live[trial_id][0], ot.number, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        ot = self._trial(trial_id)
        if ot is None:
            return
        if result and METRIC in result and "epoch" in result:
            # a trial stopped at this result is told here, not in on_trial_result
            self.on_trial_result(trial_id, result)
        key, number = self._live.pop(trial_id)
        study = self.study(key)
        self._trials.pop(trial_id, None)
        self._reported.pop(trial_id, None)
        frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if frozen is not None and frozen.state.is_finished():
            # resumed from a Tune state older than the storage: Optuna already knows the end
            return
        for name, value in trial_links(self._attrs, trial_id, result).items():
            ot.set_user_attr(name, value)  # before tell: a finished trial's attrs are fixed
        if error or not result or METRIC not in result:
            study.tell(ot, state=optuna.trial.TrialState.FAIL)
        elif int(result.get("epoch", 0)) < self._max_epochs and not result.get("trial_done"):
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(ot, float(result[METRIC]))

    def _trial(self, trial_id: str) -> optuna.Trial | None:
        if trial_id in self._trials:
            return self._trials[trial_id]
        if trial_id not in self._live:
            return None
        key, number = self._live[trial_id]  # after a restore: rebuild from the storage
        study = self.study(key)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        self._trials[trial_id] = optuna.Trial(study, frozen._trial_id)
        return self._trials[trial_id]

    def best_params(self, key: str) -> dict[str, Any] | None:
        """The best COMPLETE trial's values of a group, or None if none completed."""
        done = [t for t in self.study(key).get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
        return min(done, key=lambda t: t.value).params if done else None

    # ----------------------------------------------------------------------------- persistence
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"live": self._live}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher state. Trials the storage holds as RUNNING that the saved
        state does not know were asked after Tune's last save by a driver that then died:
        they never ran here, so they are failed, marked ``orphaned`` and asked again."""
        with open(checkpoint_path, "rb") as fh:
            self._live = pickle.load(fh)["live"]
        self._trials = {}
        known = set(self._live.values())
        for key in self._groups:
            study = self.study(key)
            for t in study.get_trials(deepcopy=False):
                if t.state == optuna.trial.TrialState.RUNNING and (key, t.number) not in known:
                    study._storage.set_trial_user_attr(t._trial_id, ORPHANED, True)
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                    log.warning("%s: Optuna trial %d was asked by a driver that died before "
                                "Tune saved it; failed and asked again", key, t.number)

    def __getstate__(self) -> dict[str, Any]:  # studies hold DB engines: rebuild lazily
        state = dict(self.__dict__)
        state["_studies"], state["_trials"] = {}, {}
        return state


class GroupedASHA(FIFOScheduler):
    """An ``AsyncHyperBandScheduler`` per group: trials compete within their group only."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        self._kwargs = {"time_attr": "training_iteration", "metric": METRIC, "mode": MODE,
                        "max_t": max_t, "grace_period": grace_period,
                        "reduction_factor": reduction_factor,
                        # a trial at the budget ends by itself, with its final report
                        "stop_last_trials": False}
        self._per_group: dict[str, AsyncHyperBandScheduler] = {}
        self.stopped: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _sched(self, trial: Any) -> AsyncHyperBandScheduler:
        key = group_key(trial.config)
        if key not in self._per_group:
            self._per_group[key] = AsyncHyperBandScheduler(**self._kwargs)
        return self._per_group[key]

    @staticmethod
    def _evaluation(trial: Any) -> bool:
        """Evaluation trials (one Tune run with the search) run their budget unpruned."""
        return trial.config.get("phase") == "evaluate"

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._evaluation(trial):
            self._sched(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._evaluation(trial):
            return TrialScheduler.CONTINUE
        action = self._sched(trial).on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and not result.get("trial_done"):
            key = group_key(trial.config)
            if int(result.get("training_iteration", 0)) < self._kwargs["max_t"]:
                self.stopped[key] = self.stopped.get(key, 0) + 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if not self._evaluation(trial):
            self._sched(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if self._evaluation(trial):
            return
        sched = self._sched(trial)
        if trial.trial_id in sched._trial_info:
            sched.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "Grouped ASHA: " + ", ".join(f"{k}: {v} stopped" for k, v in self.stopped.items())
