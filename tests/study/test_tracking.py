"""The MLflow layout and RunLogger, against a real tracking server."""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.server import ensure_server, stop_server
from study.tracking import (
    PARENT_TAG,
    RetryPolicy,
    RunLogger,
    child_runs,
    client_for,
    close_dangling_runs,
    experiment_for,
    replay_spilled,
    start_child_run,
    start_parent_run,
)
from study.tracking import _proc as proc

FAST = RetryPolicy(finish_wait_s=5, backoff_initial_s=0.1, backoff_max_s=0.5)


@pytest.fixture
def exp(mlflow_client: MlflowClient, request: pytest.FixtureRequest) -> str:
    """A fresh experiment per test on the shared server."""
    return experiment_for(mlflow_client, f"test-{request.node.name}-{time.time_ns()}")


def _child(client: MlflowClient, exp: str, parent: str, trial: int, **kw) -> str:
    return start_child_run(client, exp, parent, phase="search", variant="FT", split=0,
                           trial=trial, **kw)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_experiment_for_creates_once(mlflow_client: MlflowClient) -> None:
    name = f"study-{time.time_ns()}"
    first = experiment_for(mlflow_client, name)
    assert experiment_for(mlflow_client, name) == first
    assert mlflow_client.get_experiment(first).name == name
    with pytest.raises(ValueError):
        experiment_for(mlflow_client, " ")


def test_parent_and_children_nested_with_trial_tags(mlflow_client: MlflowClient,
                                                    exp: str) -> None:
    parent = start_parent_run(mlflow_client, exp, tags={"git_commit": "abc123"},
                              run_name="execution-1")
    long_value = "x" * 7000
    child = start_child_run(
        mlflow_client, exp, parent, phase="search", variant="FTED", split=2, trial="0007",
        params={"base_lr": 0.01, "spec": long_value}, tags={"device": "cpu"},
    )
    run = mlflow_client.get_run(child)
    tags = run.data.tags
    assert tags[PARENT_TAG] == parent
    assert (tags["phase"], tags["variant"], tags["split"], tags["trial"]) == (
        "search", "FTED", "2", "0007")
    assert tags["device"] == "cpu" and run.info.run_name == "search-FTED-s2-t0007"
    assert run.data.params["base_lr"] == "0.01"
    spec = run.data.params["spec"]
    assert len(spec) == 6000 and spec.endswith("[truncated 7000 chars]")
    assert run.info.status == "RUNNING"
    assert mlflow_client.get_run(parent).data.tags["git_commit"] == "abc123"
    assert [r.info.run_id for r in child_runs(mlflow_client, exp, parent)] == [child]


def test_restarted_trial_reuses_its_run(mlflow_client: MlflowClient, exp: str) -> None:
    parent = start_parent_run(mlflow_client, exp)
    first = _child(mlflow_client, exp, parent, 1, params={"lr": 0.1})
    mlflow_client.set_terminated(first, status="KILLED")
    again = _child(mlflow_client, exp, parent, 1, params={"lr": 0.1})
    other = _child(mlflow_client, exp, parent, 2)
    assert again == first and other != first
    assert mlflow_client.get_run(first).info.status == "RUNNING"
    assert len(child_runs(mlflow_client, exp, parent)) == 2


def test_metrics_buffer_then_arrive_in_batches_with_steps(mlflow_server: str,
                                                          mlflow_client: MlflowClient,
                                                          exp: str) -> None:
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    log = RunLogger(mlflow_server, run_id, policy=RetryPolicy(flush_every=999,
                                                              flush_interval_s=3600))
    for epoch in range(332):  # 996 values: still buffered, nothing sent
        log.metrics(epoch, {"val_loss": 1 / (epoch + 1), "val_auc": epoch / 1000,
                            "train_loss": 2.0})
    assert log.pending["metrics"] == 996
    assert mlflow_client.get_metric_history(run_id, "val_auc") == []
    log.metrics(332, {"val_loss": 0.0, "val_auc": 0.332, "train_loss": 2.0})
    assert log.pending["metrics"] == 0  # 999 reached: sent as one batch
    # 2400 more in one flush: needs three requests of <= 1000 (the server refuses more).
    big = RunLogger(mlflow_server, run_id, policy=RetryPolicy(flush_every=10_000))
    for epoch in range(333, 1133):
        big.metrics(epoch, {"val_loss": 0.5, "val_auc": epoch / 1000, "train_loss": 1.0})
    assert big.pending["metrics"] == 2400
    assert big.flush() and big.pending["metrics"] == 0
    hist = _history(mlflow_client, run_id, "val_auc")
    assert [s for s, _ in hist] == list(range(1133))
    assert hist[7] == (7, pytest.approx(0.007))
    assert len(mlflow_client.get_metric_history(run_id, "train_loss")) == 1133


def test_epochs_leave_once_per_send_interval_and_at_once_when_forced(
        mlflow_server: str, mlflow_client: MlflowClient, exp: str) -> None:
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    log = RunLogger(mlflow_server, run_id, policy=RetryPolicy(send_interval_s=3600))
    log.params({"lr": 0.1})

    def epoch(n: int, force: bool = False) -> None:
        log.metrics(n, {"epoch": float(n), "val_loss": 1 / n})
        log.flush(force=force)

    epoch(1)  # the first flush sends (with the params)
    assert _history(mlflow_client, run_id, "epoch") == [(1, 1.0)]
    assert mlflow_client.get_run(run_id).data.params == {"lr": "0.1"}
    epoch(2)
    epoch(3)  # within the interval: buffered, one request saved per epoch
    assert log.requests == 1 and log.pending["metrics"] == 4
    assert [s for s, _ in _history(mlflow_client, run_id, "epoch")] == [1]
    epoch(4, force=True)  # e.g. an ASHA rung: everything up to it leaves now
    assert log.requests == 2 and log.pending["metrics"] == 0
    assert [s for s, _ in _history(mlflow_client, run_id, "val_loss")] == [1, 2, 3, 4]
    epoch(5)
    assert log.finish("KILLED")  # the end sends what waited, whatever the interval
    assert [s for s, _ in _history(mlflow_client, run_id, "epoch")] == [1, 2, 3, 4, 5]
    assert mlflow_client.get_run(run_id).info.status == "KILLED"


def test_params_tags_artifacts_and_finish(mlflow_server: str, mlflow_client: MlflowClient,
                                          exp: str, tmp_path: Path) -> None:
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    file = tmp_path / "roc.csv"
    file.write_text("fpr,tpr\n0,0\n1,1\n")
    log = RunLogger(mlflow_server, run_id)
    log.params({f"p{i}": i for i in range(150)})  # > 100 per request: split
    log.tags({"data_fingerprint": "f" * 9000})
    log.artifact_json("lr_table.json", {"blocks": [{"name": "stem", "lr": 1e-4}]})
    log.artifact_file(file, artifact_path="roc")
    log.metrics(0, {"test_acc": 0.9})
    assert log.finish() is True
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len([k for k in run.data.params if k.startswith("p")]) == 150
    assert len(run.data.tags["data_fingerprint"]) == 8000
    assert run.data.metrics["test_acc"] == pytest.approx(0.9)
    paths = {a.path for a in mlflow_client.list_artifacts(run_id)}
    assert {"lr_table.json", "roc"} <= paths
    local = mlflow_client.download_artifacts(run_id, "lr_table.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["blocks"][0]["name"] == "stem"
    assert log.finish() is True  # idempotent
    with pytest.raises(RuntimeError, match="finished"):
        log.metrics(1, {"x": 1.0})


@pytest.mark.parametrize("raised, status", [(None, "FINISHED"), (RuntimeError, "FAILED"),
                                            (KeyboardInterrupt, "KILLED")])
def test_context_manager_ends_run(mlflow_server: str, mlflow_client: MlflowClient, exp: str,
                                  raised: type[BaseException] | None, status: str) -> None:
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    try:
        with RunLogger(mlflow_server, run_id) as log:
            log.metrics(0, {"val_loss": 1.0})
            if raised is not None:
                raise raised()
    except (RuntimeError, KeyboardInterrupt):
        pass
    run = mlflow_client.get_run(run_id)
    assert run.info.status == status and run.data.metrics["val_loss"] == 1.0


def test_rejected_entries_are_reported_and_the_rest_delivered(
        mlflow_server: str, mlflow_client: MlflowClient, exp: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A batch with one bad entry (a changed param: MLflow answers 400 for the whole batch)
    is halved until the bad one stands alone: only it is dropped, and the run says so in its
    ``logging_errors`` tag; the entry is kept in ``<run>.rejected.jsonl``."""
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0,
                    params={"lr": 0.1})
    log = RunLogger(mlflow_server, run_id, spill_dir=tmp_path)
    log.params({"lr": 0.2, "wd": 1e-4})  # params are immutable in MLflow: lr rejected (400)
    log.tags({"note": "kept"})
    log.metrics(0, {"val_loss": 0.3})
    with caplog.at_level(logging.ERROR):
        assert log.finish() is True
    assert "MLflow rejected param lr" in caplog.text
    run = mlflow_client.get_run(run_id)
    assert run.data.params == {"lr": "0.1", "wd": "0.0001"}
    assert run.data.metrics["val_loss"] == 0.3 and run.data.tags["note"] == "kept"
    assert run.info.status == "FINISHED"
    errors = run.data.tags["logging_errors"]
    assert errors.startswith("1 rejected: param lr: HTTP 400 INVALID_PARAMETER_VALUE")
    kept = [json.loads(line) for line in (tmp_path / f"{run_id}.rejected.jsonl").open()]
    assert [(k["kind"], k["entry"]) for k in kept] == [("param", ["lr", "0.2"])]
    with pytest.raises(ValueError, match="not a number"):
        RunLogger(mlflow_server, run_id).metrics(0, {"x": "abc"})
    with pytest.raises(ValueError, match="status"):
        RunLogger(mlflow_server, run_id).finish("DONE")  # type: ignore[arg-type]


def test_logger_pickles_with_its_buffer(mlflow_server: str, mlflow_client: MlflowClient,
                                        exp: str) -> None:
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    log = RunLogger(client_for(mlflow_server), run_id)
    log.metrics(0, {"val_loss": 0.5})
    clone = pickle.loads(pickle.dumps(log))
    assert clone.tracking_uri == mlflow_server and clone.pending["metrics"] == 1
    assert clone.finish()
    assert _history(mlflow_client, run_id, "val_loss") == [(0, 0.5)]


def test_unreachable_server_keeps_buffer_spills_and_replays(
        mlflow_server: str, mlflow_client: MlflowClient, exp: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A logger whose server is away holds everything, says so with counts, spills at finish;
    replaying the spill delivers it all and ends the run."""
    run_id = _child(mlflow_client, exp, start_parent_run(mlflow_client, exp), 0)
    dead = f"http://127.0.0.1:{proc.free_port('127.0.0.1')}"  # nothing listens there
    log = RunLogger(dead, run_id, policy=FAST, spill_dir=tmp_path / "spill")
    with caplog.at_level(logging.WARNING):
        for epoch in range(3):
            log.metrics(epoch, {"val_loss": 1.0 - epoch / 10})
        log.params({"lr": 0.01})
        log.artifact_json("preds.json", [0.1, 0.9])
        started = time.monotonic()
        assert log.flush() is False  # default: one attempt, training is not held up
        assert time.monotonic() - started < 3
        assert log.finish("FINISHED", wait_s=0.3) is False
    assert "holding for run" in caplog.text and "3 metrics" in caplog.text
    assert "undelivered" in caplog.text
    assert (tmp_path / "spill" / f"{run_id}.pending.json").is_file()
    assert mlflow_client.get_run(run_id).info.status == "RUNNING"

    assert replay_spilled(tmp_path / "spill", mlflow_server) == 1
    assert list((tmp_path / "spill").iterdir()) == []
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.01"
    assert _history(mlflow_client, run_id, "val_loss") == [(0, 1.0), (1, 0.9), (2, 0.8)]
    assert {a.path for a in mlflow_client.list_artifacts(run_id)} == {"preds.json"}


def test_close_dangling_runs_ends_only_running_children(mlflow_client: MlflowClient,
                                                        exp: str) -> None:
    parent = start_parent_run(mlflow_client, exp)
    running = [_child(mlflow_client, exp, parent, t) for t in (1, 2)]
    done = _child(mlflow_client, exp, parent, 3)
    mlflow_client.set_terminated(done, status="FINISHED")
    other_parent = start_parent_run(mlflow_client, exp)
    stranger = _child(mlflow_client, exp, other_parent, 1)

    assert sorted(close_dangling_runs(mlflow_client, exp, parent)) == sorted(running)
    status = {r: mlflow_client.get_run(r).info.status for r in [*running, done, stranger]}
    assert status == {running[0]: "KILLED", running[1]: "KILLED", done: "FINISHED",
                      stranger: "RUNNING"}
    assert mlflow_client.get_run(parent).info.status == "RUNNING"
    assert close_dangling_runs(mlflow_client, exp, parent) == []
    assert child_runs(mlflow_client, exp, parent, status="RUNNING") == []


def test_buffered_metrics_arrive_after_a_real_server_restart(tmp_path: Path) -> None:
    """Stop the server mid-run, keep logging, restart it (same port, so the logger's URL still
    works): everything arrives, nothing stays RUNNING. Two server starts, ~20-30 s."""
    info = ensure_server(tmp_path, timeout_s=180)
    try:
        client = client_for(info.url)
        exp = experiment_for(client, "restart")
        parent = start_parent_run(client, exp)
        run_id = _child(client, exp, parent, 0)
        log = RunLogger(info.url, run_id, policy=RetryPolicy(flush_every=2, finish_wait_s=60,
                                                             backoff_max_s=2))
        log.metrics(0, {"val_loss": 1.0, "val_auc": 0.5})  # sent (flush_every=2)
        assert log.pending["metrics"] == 0
        stop_server(tmp_path)
        for epoch in range(1, 6):  # during the outage: each try fails fast, buffer grows
            log.metrics(epoch, {"val_loss": 1.0 / (epoch + 1), "val_auc": 0.5 + epoch / 20})
        assert log.pending["metrics"] == 10 and log.flush(wait_s=0) is False
        restarted = ensure_server(tmp_path, timeout_s=180)
        assert not restarted.reused and restarted.pid != info.pid
        assert restarted.url == info.url  # same port: the logger's URL still works
        assert log.finish() is True
        assert [s for s, _ in _history(client, run_id, "val_auc")] == list(range(6))
        assert client.get_run(run_id).info.status == "FINISHED"
        close_dangling_runs(client, exp, parent)
        RunLogger(client, parent).finish()
        assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    finally:
        stop_server(tmp_path)
