"""The epoch journal: a trial's epochs reach MLflow (a real server) exactly once across a crash
after the checkpoint was persisted, a failure while persisting it, and lagging checkpoints."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study._journal import JOURNAL_FILE, EpochJournal, logged_epochs
from study.tracking import RunLogger, experiment_for


@pytest.fixture
def run_id(mlflow_client: MlflowClient, request: pytest.FixtureRequest) -> str:
    exp = experiment_for(mlflow_client, f"test-journal-{request.node.name}-{time.time_ns()}")
    return mlflow_client.create_run(exp).info.run_id


def _epochs(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))


def _train(journal: EpochJournal, logger: RunLogger, epochs: range, *, every: int = 1,
           persisted: list[Path] | None = None, work: Path | None = None) -> None:
    """What the trainable does per epoch: record, report (copy the folder: Tune's persisting),
    then send what the persisted checkpoint covers."""
    for e in epochs:
        saved = e - e % every
        journal.record(e, {"epoch": float(e), "val_loss": 1.0 / e}, saved)
        if persisted is not None and work is not None:
            dest = work.parent / f"checkpoint_{e:06d}"
            shutil.copytree(work, dest)
            persisted.append(dest)
        journal.send(logger, upto=saved)
        logger.flush()


def _begin(tmp_path: Path, server: str, run_id: str) -> tuple[Path, EpochJournal, RunLogger]:
    work = tmp_path / "work"
    work.mkdir()
    return work, EpochJournal(work), RunLogger(server, run_id)


def test_crash_after_the_checkpoint_was_persisted_backfills_the_missing_epoch(
        tmp_path, mlflow_server, mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    persisted: list[Path] = []
    _train(journal, logger, range(1, 3), persisted=persisted, work=work)
    # epoch 3: recorded and persisted, then the worker dies before it reaches MLflow
    journal.record(3, {"epoch": 3.0, "val_loss": 1 / 3}, 3)
    shutil.copytree(work, tmp_path / "checkpoint_000003")
    assert [s for s, _ in _epochs(mlflow_client, run_id)] == [1, 2]

    restart = tmp_path / "restart"
    shutil.copytree(tmp_path / "checkpoint_000003", restart)
    assert logged_epochs(mlflow_client, run_id) == 2
    again = EpochJournal.restore(restart, logged_epochs(mlflow_client, run_id))
    logger = RunLogger(mlflow_server, run_id)
    assert again.send(logger, upto=float("inf")) == 1
    _train(again, logger, range(4, 6))
    logger.finish()
    history = _epochs(mlflow_client, run_id)
    assert [s for s, _ in history] == [1, 2, 3, 4, 5]          # no gap, no repeat
    assert history[2] == (3, pytest.approx(1 / 3))


def test_failure_while_persisting_falls_back_without_repeating_the_epoch(
        tmp_path, mlflow_server, mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    persisted: list[Path] = []
    _train(journal, logger, range(1, 4), persisted=persisted, work=work)
    # epoch 4 is recorded, then persisting its checkpoint fails (no space left): not sent
    journal.record(4, {"epoch": 4.0, "val_loss": 99.0}, 4)
    restart = tmp_path / "restart"
    shutil.copytree(persisted[-1], restart)                    # Tune falls back to epoch 3
    again = EpochJournal.restore(restart, logged_epochs(mlflow_client, run_id))
    logger = RunLogger(mlflow_server, run_id)
    assert again.send(logger, upto=float("inf")) == 0
    _train(again, logger, range(4, 6))                          # epoch 4 trained again
    logger.finish()
    history = _epochs(mlflow_client, run_id)
    assert [s for s, _ in history] == [1, 2, 3, 4, 5]
    assert history[3][1] == pytest.approx(0.25)                 # the retrained value, once


def test_epochs_past_a_lagging_checkpoint_are_dropped_on_restore(tmp_path, mlflow_server,
                                                                 mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    _train(journal, logger, range(1, 6), every=2)               # checkpoints at 2 and 4
    logger.finish()
    assert [s for s, _ in _epochs(mlflow_client, run_id)] == [1, 2, 3, 4]  # 5: not yet safe
    again = EpochJournal.restore(work, logged_epochs(mlflow_client, run_id))
    assert [e["epoch"] for e in again.entries] == [1, 2, 3, 4]  # 5 will be trained again
    assert len((work / JOURNAL_FILE).read_text().splitlines()) == 4
    assert again.logged == 4
