"""Search and evaluation in one Tune run: a split's evaluation starts when its search ends.

Run as two Tune runs, every evaluation waited for the slowest search group, and the search's
last trials ran one slot at a time while the other slots idled (a one-slot tail), then Tune
started again. Here one searcher hands out both kinds of trial:

* **search** trials of every (variant, split) group, from :class:`GroupedOptunaSearcher`
  (Optuna TPE per group, ASHA per group, pruned trials told PRUNED);
* **evaluation** trials, as soon as what they depend on is known: a variant with nothing to
  search at once; a nested search's (variant, split) when that group's search has ended (all
  its trials asked and none running); a shared search's every split when the shared split's
  search has ended. Ready evaluations go first (they are the long, full-budget trials).

A trial's config says its phase (``"phase": "search" | "evaluate"``); the trainable, ASHA
(evaluations are never stopped early) and the run closer read it from there. The test set is
still touched only by evaluation trials, each once, with the configuration its split's own
search chose on validation data.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

from study.phases._grouped import METRIC, MODE, Group, GroupedOptunaSearcher

log = logging.getLogger(__name__)

#: (variant, split, chosen values) -> the configs of its evaluation trials (one per seed)
EvalItems = Callable[[str, int, dict[str, Any]], list[dict[str, Any]]]


def one_item(variant: str, split: int, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"variant": variant, "split": split, **values}]


class StudySearcher(Searcher):
    """Search trials of every group, then each (variant, split)'s evaluation when its search
    has ended; see the module docstring.

    ``evaluations``: every (variant, split) to evaluate, with the group key whose best
    configuration it takes (``None``: nothing to search, evaluate the fixed values);
    ``items``: turns a chosen configuration into evaluation trial configs (e.g. one per seed).
    """

    def __init__(self, grouped: GroupedOptunaSearcher, groups: Sequence[Group],
                 evaluations: Mapping[tuple[str, int], str | None],
                 items: EvalItems = one_item) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.grouped = grouped
        self._budgets = {g.key: g.budget for g in groups}
        self._evaluations = dict(evaluations)
        self._items = items
        self._issued: set[tuple[str, int]] = set()   # (variant, split) handed out or skipped
        self._queue: list[dict[str, Any]] = []       # evaluation configs ready to hand out
        self._eval_live: set[str] = set()            # tune trial ids of evaluation trials
        self.skipped: list[tuple[str, int]] = []     # searched, but no trial completed

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True

    # ------------------------------------------------------------------ what is ready
    def group_done(self, key: str) -> bool:
        return not self.grouped.unfinished(key, self._budgets[key])

    def _refill(self) -> None:
        for (variant, split), key in self._evaluations.items():
            if (variant, split) in self._issued:
                continue
            if key is not None and not self.group_done(key):
                continue
            self._issued.add((variant, split))
            values: dict[str, Any] | None = {}
            if key is not None:
                values = self.grouped.best_params(key)
            if values is None:
                log.warning("%s split %d: no search trial completed; not evaluated",
                            variant, split)
                self.skipped.append((variant, split))
                continue
            self._queue.extend({"phase": "evaluate", **c}
                               for c in self._items(variant, split, values))

    def evaluations_left(self) -> int:
        """Evaluation trials not handed out yet (queued, or waiting for their search)."""
        waiting = [k for k in self._evaluations if k not in self._issued]
        return len(self._queue) + len(waiting)

    # ------------------------------------------------------------------ Searcher
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._refill()
        if self._queue:
            self._eval_live.add(trial_id)
            return self._queue.pop(0)
        config = self.grouped.suggest(trial_id)
        if config == Searcher.FINISHED:
            # every search trial is out; evaluations may still wait for running searches
            return Searcher.FINISHED if not self.evaluations_left() else None
        return {"phase": "search", **config} if isinstance(config, dict) else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._eval_live:
            self.grouped.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._eval_live:
            self._eval_live.discard(trial_id)
            return
        self.grouped.on_trial_complete(trial_id, result, error)

    # ------------------------------------------------------------------ persistence
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"live": self.grouped._live, "issued": self._issued,
                         "queue": self._queue, "eval_live": self._eval_live,
                         "skipped": self.skipped}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved state; the grouped searcher's part as :meth:`GroupedOptunaSearcher.
        restore` (orphaned Optuna trials failed and asked again)."""
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        with open(checkpoint_path + ".grouped", "wb") as fh:
            pickle.dump({"live": state["live"]}, fh)
        self.grouped.restore(checkpoint_path + ".grouped")
        self._issued, self._queue = set(state["issued"]), list(state["queue"])
        self._eval_live, self.skipped = set(state["eval_live"]), list(state["skipped"])
