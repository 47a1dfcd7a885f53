"""The epoch journal: each of a trial's epochs is in MLflow (a real server) once across a crash
before MLflow got the epoch, a failure while persisting its checkpoint, and lagging
checkpoints."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.tracking import RunLogger, experiment_for
from study.tracking._journal import JOURNAL_FILE, EpochJournal, logged_epochs


@pytest.fixture
def run_id(mlflow_client: MlflowClient, request: pytest.FixtureRequest) -> str:
    exp = experiment_for(mlflow_client, f"test-journal-{request.node.name}-{time.time_ns()}")
    return mlflow_client.create_run(exp).info.run_id


def _epochs(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))


def _train(journal: EpochJournal, logger: RunLogger, epochs: range, *, every: int = 1,
           persisted: list[Path] | None = None, work: Path | None = None) -> None:
    """What the trainable does per epoch: record, send to MLflow, then report (copying the
    folder: Tune's persisting)."""
    for e in epochs:
        journal.record(e, {"epoch": float(e), "val_loss": 1.0 / e}, e - e % every)
        journal.send(logger)
        logger.flush()
        if persisted is not None and work is not None:
            dest = work.parent / f"checkpoint_{e:06d}"
            shutil.copytree(work, dest)
            persisted.append(dest)


def _begin(tmp_path: Path, server: str, run_id: str) -> tuple[Path, EpochJournal, RunLogger]:
    work = tmp_path / "work"
    work.mkdir()
    return work, EpochJournal(work), RunLogger(server, run_id)


def test_epochs_mlflow_did_not_get_before_the_crash_are_sent_after_the_restart(
        tmp_path, mlflow_server, mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    _train(journal, logger, range(1, 3))
    # epoch 3: recorded and persisted, but the worker dies before MLflow got it
    journal.record(3, {"epoch": 3.0, "val_loss": 1 / 3}, 3)
    shutil.copytree(work, tmp_path / "checkpoint_000003")
    assert [s for s, _ in _epochs(mlflow_client, run_id)] == [1, 2]

    restart = tmp_path / "restart"
    shutil.copytree(tmp_path / "checkpoint_000003", restart)
    assert logged_epochs(mlflow_client, run_id) == 2
    again = EpochJournal.restore(restart, logged_epochs(mlflow_client, run_id))
    assert again.retrained() is None
    logger = RunLogger(mlflow_server, run_id)
    assert again.send(logger) == 1
    _train(again, logger, range(4, 6))
    logger.finish()
    history = _epochs(mlflow_client, run_id)
    assert [s for s, _ in history] == [1, 2, 3, 4, 5]          # no gap, no repeat
    assert history[2] == (3, pytest.approx(1 / 3))


def test_an_epoch_whose_checkpoint_was_lost_is_trained_again_but_logged_once(
        tmp_path, mlflow_server, mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    persisted: list[Path] = []
    _train(journal, logger, range(1, 4), persisted=persisted, work=work)
    # epoch 4 is sent, then persisting its checkpoint fails (no space left on the device)
    journal.record(4, {"epoch": 4.0, "val_loss": 0.2501}, 4)
    journal.send(logger)
    logger.flush()
    restart = tmp_path / "restart"
    shutil.copytree(persisted[-1], restart)                    # Tune falls back to epoch 3
    again = EpochJournal.restore(restart, logged_epochs(mlflow_client, run_id))
    assert again.retrained() == (4, 4)
    logger = RunLogger(mlflow_server, run_id)
    assert again.send(logger) == 0
    _train(again, logger, range(4, 6))                          # epoch 4 trained again
    logger.finish()
    history = _epochs(mlflow_client, run_id)
    assert [s for s, _ in history] == [1, 2, 3, 4, 5]
    assert history[3][1] == pytest.approx(0.2501)               # the first attempt's, once


def test_epochs_past_a_lagging_checkpoint_are_dropped_on_restore(tmp_path, mlflow_server,
                                                                 mlflow_client, run_id):
    work, journal, logger = _begin(tmp_path, mlflow_server, run_id)
    _train(journal, logger, range(1, 6), every=2)               # checkpoints at 2 and 4
    logger.finish()
    assert [s for s, _ in _epochs(mlflow_client, run_id)] == [1, 2, 3, 4, 5]
    again = EpochJournal.restore(work, logged_epochs(mlflow_client, run_id))
    assert [e["epoch"] for e in again.entries] == [1, 2, 3, 4]  # 5 will be trained again
    assert len((work / JOURNAL_FILE).read_text().splitlines()) == 4
    assert again.retrained() == (5, 5)                          # and not logged twice
