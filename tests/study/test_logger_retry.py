"""Nothing dropped: every kind of transient answer injected between the trial logger and a real
MLflow server (a real loopback proxy, ``tests/_fault_proxy.py``); only definitive rejections
are dropped, and those are recorded. Plus: one request per trial-epoch, no health probes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.tracking import (
    RetryPolicy,
    RunLogger,
    experiment_for,
    replay_spilled,
    start_child_run,
    start_parent_run,
)
from tests._fault_proxy import Fault, FaultProxy

FAST = RetryPolicy(finish_wait_s=20, backoff_initial_s=0.1, backoff_max_s=0.5)
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
UPDATE = "/api/2.0/mlflow/runs/update"

TRANSIENT = {
    "pool-exhausted-400": Fault.pool_exhausted(),
    "database-locked-400": Fault.mlflow(400, "BAD_REQUEST",
                                        "(sqlite3.OperationalError) database is locked"),
    "unavailable-503": Fault.mlflow(503, "TEMPORARILY_UNAVAILABLE", "try later"),
    "internal-500-html": Fault(500, "<html>Internal Server Error</html>"),
    "bad-gateway-502": Fault(502, "Bad Gateway"),
    "rate-limited-429": Fault.mlflow(429, "REQUEST_LIMIT_EXCEEDED", "slow down"),
    "connection-reset": Fault.reset(),
}


@pytest.fixture
def proxy(mlflow_server: str):
    with FaultProxy(mlflow_server) as p:
        yield p


@pytest.fixture
def run_id(mlflow_client: MlflowClient, request: pytest.FixtureRequest) -> str:
    exp = experiment_for(mlflow_client, f"retry-{request.node.name}-{time.time_ns()}")
    parent = start_parent_run(mlflow_client, exp)
    return start_child_run(mlflow_client, exp, parent, phase="search", variant="FT", split=0,
                           trial=0, params={"lr": 0.1})


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_transient_answers_are_kept_and_delivered(
        kind: str, proxy: FaultProxy, run_id: str, mlflow_client: MlflowClient,
        tmp_path: Path) -> None:
    """The first three log-batch requests fail with ``kind``: every epoch still arrives, once,
    the run ends FINISHED, nothing is recorded as dropped."""
    proxy.inject("runs/log-batch", TRANSIENT[kind], times=3)
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    for epoch in range(1, 6):
        log.metrics(epoch, {"val_loss": 1.0 / epoch, "epoch": epoch})
        started = time.monotonic()
        log.flush()  # one try at most, none while backing off: training is not held up
        assert time.monotonic() - started < 5
    log.tags({"stop_reason": "budget"})
    assert log.finish() is True
    assert proxy.injected[LOG_BATCH] == 3
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "budget"
    assert "logging_errors" not in run.data.tags and log.dropped == []
    assert _history(mlflow_client, run_id, "epoch") == [(e, float(e)) for e in range(1, 6)]
    assert list(tmp_path.iterdir()) == []  # nothing spilled, nothing rejected
    if kind == "connection-reset":  # no answer at all: sent again at once on a new connection
        assert log.reconnects >= 1


def test_transient_failure_of_the_status_update_is_retried(
        proxy: FaultProxy, run_id: str, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    proxy.inject("runs/update", Fault.pool_exhausted(), times=2)
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    log.metrics(1, {"val_loss": 0.5})
    assert log.finish("KILLED") is True
    assert proxy.injected[UPDATE] == 2
    assert mlflow_client.get_run(run_id).info.status == "KILLED"


def test_a_server_that_stays_loaded_gets_the_buffer_spilled_then_replayed(
        proxy: FaultProxy, run_id: str, mlflow_server: str, mlflow_client: MlflowClient,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Pool exhausted for longer than finish waits: the buffer goes to a file, not away."""
    proxy.inject("runs/log-batch", Fault.pool_exhausted(), times=1000)
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    for epoch in range(1, 4):
        log.metrics(epoch, {"epoch": epoch})
    with caplog.at_level(logging.WARNING):
        assert log.finish(wait_s=0.5) is False
    assert "QueuePool limit" in caplog.text and "undelivered: 3 metrics" in caplog.text
    spilled = json.loads((tmp_path / f"{run_id}.pending.json").read_text())
    assert len(spilled["metrics"]) == 3 and spilled["status"] == "FINISHED"
    assert replay_spilled(tmp_path, mlflow_server) == 1
    assert _history(mlflow_client, run_id, "epoch") == [(e, float(e)) for e in range(1, 4)]
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"


def test_refused_login_is_kept_not_dropped(
        proxy: FaultProxy, run_id: str, mlflow_server: str, mlflow_client: MlflowClient,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """401 is about the credentials, not the data: no retry storm, kept, spilled, replayable."""
    proxy.inject("runs/log-batch", Fault.mlflow(401, "UNAUTHENTICATED",
                                                "You are not authenticated."), times=1000)
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    log.metrics(1, {"val_loss": 0.5})
    with caplog.at_level(logging.ERROR):
        started = time.monotonic()
        assert log.finish() is False
        assert time.monotonic() - started < 5  # not the 20 s finish wait
    assert "refuses this client's login" in caplog.text and "MLFLOW_TRACKING_USERNAME" in (
        caplog.text)
    assert proxy.injected[LOG_BATCH] == 1
    assert replay_spilled(tmp_path, mlflow_server) == 1
    assert _history(mlflow_client, run_id, "val_loss") == [(1, 0.5)]


def test_injected_definitive_rejection_drops_only_that_entry(
        proxy: FaultProxy, run_id: str, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """A 400 about the data for a two-metric batch: halved, each half sent alone (then
    accepted); nothing is lost when the rejection does not repeat. A rejection that repeats
    for one entry drops that entry only and records it."""
    bad = Fault.mlflow(400, "INVALID_PARAMETER_VALUE", "Invalid value for metric 'a'")
    proxy.inject("runs/log-batch", bad, times=2)  # the batch, then its first half ('a')
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    log.metrics(1, {"a": 1.0, "b": 2.0})
    assert log.finish() is True
    run = mlflow_client.get_run(run_id)
    assert "a" not in run.data.metrics and run.data.metrics["b"] == 2.0
    assert run.data.tags["logging_errors"].startswith("1 rejected: metric a: HTTP 400")
    kept = [json.loads(line) for line in (tmp_path / f"{run_id}.rejected.jsonl").open()]
    assert [(k["kind"], k["entry"][:2]) for k in kept] == [("metric", ["a", 1.0])]
    assert run.info.status == "FINISHED"


def test_one_request_per_epoch_and_no_health_probe(
        proxy: FaultProxy, run_id: str, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """A trial's epoch (metrics, plus params and tags the first time) is one log-batch request;
    ending the run is one more. No ``/health`` requests (issue 13)."""
    log = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    log.params({"wd": 1e-4})
    log.tags({"node_id": "abc"})
    for epoch in range(1, 11):
        log.metrics(epoch, {f"m{i}": float(i) for i in range(6)} | {"epoch": epoch})
        assert log.flush() is True
    assert log.finish() is True
    assert proxy.seen[LOG_BATCH] == 10 and proxy.seen[UPDATE] == 1
    assert proxy.seen["/health"] == 0 and sum(proxy.seen.values()) == 11
    run = mlflow_client.get_run(run_id)
    assert run.data.params["wd"] == "0.0001" and run.data.tags["node_id"] == "abc"
    assert len(_history(mlflow_client, run_id, "m5")) == 10


def test_the_report_names_runs_with_logging_errors(
        proxy: FaultProxy, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """A dropped entry is a line in the report's problems, naming the run and what was lost."""
    from dashboards._load import load_study

    study = f"report-errors-{time.time_ns()}"
    exp = experiment_for(mlflow_client, study)
    parent = start_parent_run(mlflow_client, exp)
    child = start_child_run(mlflow_client, exp, parent, phase="evaluate", variant="FT",
                            split=0, trial=0, params={"lr": 0.1})
    log = RunLogger(proxy.url, child, policy=FAST, spill_dir=tmp_path)
    log.params({"lr": 0.2})  # rejected by the real server: params are immutable
    assert log.finish() is True
    problems = load_study(mlflow_client, study, parent, during_study=True).problems
    lines = [p for p in problems if "MLflow rejected part of what it logged" in p]
    assert lines == [f"run evaluate-FT-s0-t0: MLflow rejected part of what it logged "
                     f"({mlflow_client.get_run(child).data.tags['logging_errors']})"]
    assert "param lr" in lines[0]


def test_a_trial_start_waits_out_a_busy_server(proxy: FaultProxy,
                                               mlflow_client: MlflowClient) -> None:
    """Pool exhausted on create-run (MLflow's client does not retry a 400): the trial's start
    retries instead of failing the trial; one run, not two."""
    from study.tracking import child_runs, client_for

    exp = experiment_for(mlflow_client, f"start-busy-{time.time_ns()}")
    parent = start_parent_run(mlflow_client, exp)
    proxy.inject("runs/create", Fault.pool_exhausted(), times=2)
    run_id = start_child_run(client_for(proxy.url), exp, parent, phase="search", variant="FT",
                             split=0, trial=7, params={"lr": 0.1})
    assert proxy.injected["/api/2.0/mlflow/runs/create"] == 2
    assert [r.info.run_id for r in child_runs(mlflow_client, exp, parent)] == [run_id]
    assert mlflow_client.get_run(run_id).data.params == {"lr": "0.1"}


def test_replay_takes_only_its_servers_spills(
        proxy: FaultProxy, run_id: str, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """A spill folder shared by studies on one machine: each study replays its own server's
    files (as the next trial and the end of a study do) and leaves the others."""
    from study.tracking import _proc as proc

    proxy.inject("runs/log-batch", TRANSIENT["unavailable-503"], times=1)
    mine = RunLogger(proxy.url, run_id, policy=FAST, spill_dir=tmp_path)
    mine.metrics(1, {"val_loss": 0.5})
    assert mine.finish(wait_s=0) is False  # one try, 503: spilled
    dead = f"http://127.0.0.1:{proc.free_port('127.0.0.1')}"
    other = RunLogger(dead, "0" * 32, policy=FAST, spill_dir=tmp_path)
    other.metrics(1, {"x": 1.0})
    assert other.finish(wait_s=0) is False  # spilled for a server that is gone
    assert replay_spilled(tmp_path, only_uri=proxy.url, wait_s=0) == 1
    assert [p.name for p in tmp_path.glob("*.pending.json")] == [f"{'0' * 32}.pending.json"]
    assert _history(mlflow_client, run_id, "val_loss") == [(1, 0.5)]
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"
