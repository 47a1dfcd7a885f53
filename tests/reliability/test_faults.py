"""Faults injected for real into running smoke studies (real local Ray, real MLflow servers).

* A trial's Ray worker process is SIGKILLed mid-epoch (search and evaluation phases): Tune
  restarts the trial from its last checkpoint (``FailureConfig(max_failures=2)``), the study
  completes, MLflow holds one run per trial, and the evaluation results equal those of an
  undisturbed run with the same seeds (CPU training is bit-reproducible).
* The study's MLflow server is stopped for 30 s mid-evaluation (8-epoch trials) and started
  again on its port: trials keep training, the epochs logged during the outage arrive
  afterwards, no run is left RUNNING.
* A trial's last checkpoint is corrupted, then its worker killed: the restarted trial fails
  with a message naming the unreadable file (in MLflow: run FAILED, ``failure_reason`` tag);
  the study goes on and reports the evaluation as missing.

Every test here takes minutes on two cores: all are ``slow``. Undisturbed baseline and
disturbed studies run in the same session on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from search_spaces import load_spec
from study.phases._run import RUN_NAME
from study.run import StudyIncomplete
from study.server import ensure_server, stop_server
from study.tracking import child_runs, client_for
from study.tracking._proc import session_members
from tests._disk import fill, small_disk
from tests._procs import wait_for_output
from tests._ray_nodes import run_cluster_script
from tests._tune import registered_checkpoint
from tests.reliability._tally import tally
from trainables.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow
RESULT_KEYS = ("test_acc", "test_auc", "test_loss", "best_val_loss", "epochs_run")


# ----------------------------------------------------------------------------- injection

@dataclasses.dataclass(frozen=True)
class Target:
    pid: int            # the Ray worker training the trial
    trial_dir: Path     # its folder in Tune's storage (checkpoint_*/, error.txt)
    run_id: str         # its MLflow run


class Injector(threading.Thread):
    """Watches a study's runs in MLflow and Tune's storage; once a running trial of ``phase``
    has a checkpoint Tune has taken in (``registered_checkpoint``), runs ``action(Target)`` on
    it, once per phase listed.

    The worker is found from the run's ``worker_pid`` tag (set at every start of a trial).
    With ``freeze``, it is stopped (SIGSTOP) and the run checked to be still RUNNING under the
    same worker before the action runs (a reused worker may already train another trial), and
    continued (SIGCONT) after it when still alive: nothing races the action."""

    def __init__(self, uri: str, study: str, storage: Path, phases: list[str], action,  # type: ignore[no-untyped-def]
                 *, freeze: bool = True) -> None:
        super().__init__(daemon=True)
        self.uri, self.study, self.storage = uri, study, storage
        self.phases, self.action, self.freeze = list(phases), action, freeze
        self.done: list[tuple[str, str, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = client_for(self.uri)
            while self.phases and not self.stop.is_set():
                if self._try(client, self.phases[0]):
                    self.phases.pop(0)
                time.sleep(0.2)
        except BaseException as e:  # seen by the test, not lost in a thread
            self.error = e

    def _try(self, client, phase: str) -> bool:  # type: ignore[no-untyped-def]
        exp = client.get_experiment_by_name(self.study)
        if exp is None:
            return False
        runs = client.search_runs([exp.experiment_id], filter_string=(
            f"attributes.status = 'RUNNING' and tags.phase = '{phase}'"))
        for run in runs:
            pid, trial = run.data.tags.get("worker_pid"), run.data.tags.get("trial")
            dirs = list((self.storage / RUN_NAME).glob(f"*_{trial}_*"))
            if not pid or len(dirs) != 1 or registered_checkpoint(dirs[0]) is None:
                continue
            if not _is_ray_worker(int(pid)):  # a stale tag: that worker is gone
                continue
            if self.freeze:
                try:
                    os.kill(int(pid), signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                now = client.get_run(run.info.run_id)
                if now.info.status != "RUNNING" or now.data.tags.get("worker_pid") != pid:
                    os.kill(int(pid), signal.SIGCONT)
                    continue
            try:
                self.action(Target(int(pid), dirs[0], run.info.run_id))
            finally:
                if self.freeze:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGCONT)
            self.done.append((phase, dirs[0].name, int(pid)))
            return True
        return False


def _is_ray_worker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return False


def _kill(target: Target) -> None:
    os.kill(target.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------- studies

def _run(name: str, root: Path, uri: str, spec=None):  # type: ignore[no-untyped-def]
    from study.run import run_study

    spec = (spec or load_spec("smoke")).with_name(name)
    return spec, run_study(spec, root / name, uri, echo=lambda _line: None)


def _long_evaluation_spec():  # type: ignore[no-untyped-def]
    """smoke.yaml with 8 evaluation epochs (no early stop): trials that outlast an outage; and
    6-epoch search trials: a search trial holds a checkpoint Tune has taken in only from the
    report after its first ASHA rung (rungs 1, 2, 4), and smoke's 2-epoch trials end at that
    report, leaving a fault nothing to hit."""
    from search_spaces import spec_from_dict

    data = load_spec("smoke").to_dict()
    data["evaluation"] = {**data["evaluation"], "max_epochs": 8, "early_stopping_patience": 8}
    data["search"]["asha"] = {**data["search"]["asha"], "max_epochs": 6}
    return spec_from_dict(data, source="smoke.yaml (6 search, 8 evaluation epochs)")


def _results(outcome) -> dict[tuple[str, int], tuple]:  # type: ignore[no-untyped-def]
    return {(r["variant"], int(r["split"])): tuple(r.get(k) for k in RESULT_KEYS)
            for r in outcome.evaluations}


def _assert_same_results(outcome, base) -> None:  # type: ignore[no-untyped-def]
    assert _results(outcome) == _results(base)  # bit-identical to the undisturbed run
    assert list(outcome.table["variant"]) == list(base.table["variant"])
    for col in ("accuracy_%", "std_%", "auc", "splits"):  # Table 1 but its wall-clock column
        assert list(outcome.table[col]) == list(base.table[col]), col


def _check_runs(client, spec, outcome) -> list:  # type: ignore[no-untyped-def]
    """One run per trial, none RUNNING, complete per-epoch histories; returns the runs."""
    runs = child_runs(client, outcome.experiment_id, outcome.parent_run_id)
    assert client.get_run(outcome.parent_run_id).info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    evaluate = [r for r in runs if r.data.tags["phase"] == "evaluate"]
    assert len(search) == len(spec.variants) * spec.search.trials
    assert len({r.data.tags["trial"] for r in search}) == len(search)  # not two for one trial
    assert len({r.data.tags["variant"] for r in evaluate}) == len(evaluate)
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")]
        if r.info.status in ("FINISHED", "KILLED"):  # KILLED: pruned by ASHA after an epoch
            assert steps == list(range(1, len(steps) + 1)) and steps, (r.info.run_name, steps)
        if r.info.status == "FINISHED":
            assert len(steps) == int(r.data.metrics["epochs_run"]), r.info.run_name
    return runs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, ray_local, mlflow_server):
    """The undisturbed study the disturbed ones must equal (8 evaluation epochs: time to hit)."""
    return _run("faults-baseline", tmp_path_factory.mktemp("base"), mlflow_server,
                _long_evaluation_spec())


def test_killed_trial_workers_restart_from_checkpoint_with_identical_results(
        baseline, tmp_path, ray_local, mlflow_server, mlflow_client):
    spec, base = baseline
    injector = Injector(mlflow_server, "faults-kill", tmp_path / "faults-kill" / "ray",
                        ["search", "evaluate"], _kill)
    injector.start()
    try:
        spec, outcome = _run("faults-kill", tmp_path, mlflow_server, _long_evaluation_spec())
    finally:
        injector.stop.set()
    assert injector.error is None, injector.error
    assert [p for p, _, _ in injector.done] == ["search", "evaluate"], injector.done
    tally["faults injected: trial worker SIGKILLed mid-epoch"] += len(injector.done)
    runs = _check_runs(mlflow_client, spec, outcome)
    for _phase, trial_dir, _ in injector.done:  # Tune saw the failure and restarted the trial
        assert (tmp_path / "faults-kill" / "ray" / RUN_NAME / trial_dir / "error.txt").is_file()
    _assert_same_results(outcome, base)
    tally["faults survived: trial worker SIGKILLed mid-epoch"] += len(injector.done)
    tally["runs lost (kill test)"] += 0 if len(runs) else 1


def test_mlflow_server_outage_of_30s_mid_evaluation_loses_nothing(tmp_path, ray_local):
    server_dir = tmp_path / "server"
    info = ensure_server(server_dir, timeout_s=180)
    outage: dict[str, float] = {}

    def outage_30s(target: Target) -> None:
        outage["start"] = time.monotonic()
        outage["down_wall"] = time.time()  # it refuses connections from here; stopping it
        assert stop_server(server_dir)     # may take its grace period (keep-alive clients)
        time.sleep(30)
        outage["restart"] = time.monotonic()
        outage["up_wall"] = time.time()
        again = ensure_server(server_dir, timeout_s=180)
        outage["back"] = time.monotonic()
        assert again.url == info.url  # same port: trials' loggers reach the new server

    injector = Injector(info.url, "faults-outage", tmp_path / "faults-outage" / "ray",
                        ["evaluate"], outage_30s, freeze=False)
    injector.start()
    try:
        spec, outcome = _run("faults-outage", tmp_path, info.url, _long_evaluation_spec())
        injector.join(timeout=300)
        client = client_for(info.url)
        assert injector.error is None and injector.done, injector.error
        assert outage["restart"] - outage["start"] >= 30
        tally["faults injected: MLflow server stopped 30 s mid-evaluation"] += 1
        runs = _check_runs(client, spec, outcome)
        # trials kept training while the server was down: epochs logged (client timestamps)
        # inside the outage are in MLflow now, delivered after the restart
        during = [m for r in runs for m in client.get_metric_history(r.info.run_id, "val_loss")
                  if outage["down_wall"] <= m.timestamp / 1000 <= outage["up_wall"]]
        assert during, "no epoch ended during the outage: the fault did not hit training"
        tally["epochs logged during the MLflow outage, delivered afterwards"] += len(during)
        assert len(outcome.evaluations) == len(spec.variants)
        tally["faults survived: MLflow server stopped 30 s mid-evaluation"] += 1
    finally:
        stop_server(server_dir)


def test_corrupted_checkpoint_fails_its_trial_clearly_and_the_study_goes_on(
        tmp_path, ray_local, mlflow_server, mlflow_client):
    corrupted: list[Path] = []

    def corrupt_then_kill(target: Target) -> None:  # the worker is frozen
        for f in sorted(target.trial_dir.glob("checkpoint_*/" + CHECKPOINT_FILE)):
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 3] + b"\0garbage" * 64)
            corrupted.append(f)
        os.kill(target.pid, signal.SIGKILL)

    injector = Injector(mlflow_server, "faults-corrupt", tmp_path / "faults-corrupt" / "ray",
                        ["evaluate"], corrupt_then_kill)
    injector.start()
    try:  # the study goes on, then ends FAILED: a declared variant was never evaluated
        with pytest.raises(StudyIncomplete, match="never evaluated"):
            _run("faults-corrupt", tmp_path, mlflow_server)
    finally:
        injector.stop.set()
    assert injector.error is None and injector.done and corrupted, injector.done
    exp = mlflow_client.get_experiment_by_name("faults-corrupt").experiment_id
    parent_id = next(r.info.run_id for r in mlflow_client.search_runs([exp])
                     if "mlflow.parentRunId" not in r.data.tags)
    trial_dir = tmp_path / "faults-corrupt" / "ray" / RUN_NAME / injector.done[0][1]
    tally["faults injected: checkpoint file corrupted (then worker killed)"] += 1
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(corrupted[-1].parent)
    runs = child_runs(mlflow_client, exp, parent_id)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1, [(r.info.run_name, r.info.status) for r in runs]
    reason = failed[0].data.tags.get("failure_reason", "")
    assert "CheckpointError" in reason and "unreadable checkpoint" in reason, reason
    assert str(tmp_path) not in reason  # the path stays in Tune's error.txt, out of MLflow
    assert "CheckpointError" in (trial_dir / "error.txt").read_text()
    parent = mlflow_client.get_run(parent_id)
    assert parent.info.status == "FAILED"  # the study went on, and says what is missing
    variant = failed[0].data.tags["variant"]
    assert variant in parent.data.tags.get("missing_evaluations", "")
    assert variant in parent.data.tags.get("failure_reason", "")
    others = [r for r in runs if r.data.tags["phase"] == "evaluate" and r is not failed[0]]
    assert all(r.info.status == "FINISHED" for r in others)
    tally["faults survived: checkpoint file corrupted (clear failure, study went on)"] += 1


def test_full_disk_while_persisting_a_checkpoint_falls_back_to_the_previous_one(
        baseline, tmp_path, ray_local, mlflow_server, mlflow_client):
    """Tune's storage runs full while an evaluation trial trains: persisting its next
    checkpoint fails (ENOSPC), Tune restarts it from the previous checkpoint once space is back,
    and the study ends as if nothing had happened."""
    spec, base = baseline
    full: dict[str, float] = {}

    def fill_until_it_fails(target: Target) -> None:
        filler = fill(disk)
        full["start"] = time.monotonic()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the trial says why it failed, then Tune retries
            if "failure_reason" in mlflow_client.get_run(target.run_id).data.tags:
                break
            time.sleep(0.05)
        filler.unlink()  # space is back: the retry can persist
        full["s"] = time.monotonic() - full["start"]

    with small_disk(tmp_path / "faults-full" / "ray", "1500m") as disk:
        injector = Injector(mlflow_server, "faults-full", disk, ["evaluate"],
                            fill_until_it_fails, freeze=False)
        injector.start()
        try:
            spec, outcome = _run("faults-full", tmp_path, mlflow_server, _long_evaluation_spec())
        finally:
            injector.stop.set()
        assert injector.error is None and injector.done, injector.error
        tally["faults injected: disk full while a checkpoint is persisted"] += 1
        trial_dir = disk / RUN_NAME / injector.done[0][1]
        error = (trial_dir / "error.txt").read_text()
        assert "No space left on device" in error, error[-2000:]
        runs = _check_runs(mlflow_client, spec, outcome)  # no epoch twice, none missing
    victim = next(r for r in runs if r.data.tags["trial"] in injector.done[0][1])
    assert victim.info.status == "FINISHED"
    assert victim.data.tags["restored_from"].startswith("checkpoint_")
    assert "No space left on device" in victim.data.tags["restarted_after"]
    assert victim.data.tags["retrained_epochs"]  # logged, its checkpoint lost: trained again
    assert "failure_reason" not in victim.data.tags
    _assert_same_results(outcome, base)
    tally["faults survived: disk full (fell back to the previous checkpoint)"] += 1


def test_launcher_sigkilled_mid_search_resumes_without_loss_or_duplicates(
        tmp_path, mlflow_server, mlflow_client):
    import optuna

    from study.tracking import experiment_for

    name = "faults-driver"
    args = [sys.executable, "-m", "study.launch", "--smoke-test", "--runs-dir",
            str(tmp_path / "runs"), "--study", name, "--tracking-uri", mlflow_server]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = tmp_path / "first.log"
    with first.open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        wait_for_output(first, "search   2/6 done", proc, timeout_s=400)
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs: runs stay RUNNING, state as is
        proc.wait(timeout=30)
    time.sleep(5)  # Ray's processes share the driver's fate; end any straggler of ours
    for pid in session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    tally["faults injected: launcher (driver) SIGKILLed mid-search"] += 1
    second = tmp_path / "second.log"
    with second.open("w") as log:
        rc = subprocess.run([*args, "--resume"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, timeout=900).returncode
    text = second.read_text()
    assert rc == 0 and "Table 1" in text, text[-3000:]
    spec = load_spec("smoke")
    exp = experiment_for(mlflow_client, name)
    parents = [r for r in mlflow_client.search_runs([exp])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same execution
    runs = child_runs(mlflow_client, exp, parents[0].info.run_id)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    evaluate = [r for r in runs if r.data.tags["phase"] == "evaluate"]
    assert len(search) == len({r.data.tags["trial"] for r in search})  # one run per trial
    assert sorted(r.data.tags["variant"] for r in evaluate) == sorted(spec.variants)
    assert all(r.info.status == "FINISHED" for r in evaluate)
    storage = f"sqlite:///{tmp_path / 'runs' / name / 'optuna.db'}"
    for v in spec.variants:
        every = optuna.load_study(study_name=f"{name}/{v}/split0", storage=storage).trials
        # trials asked by the killed driver after Tune's last save never ran: failed, marked
        # orphaned, and asked again
        orphans = [t for t in every if t.user_attrs.get("orphaned")]
        assert all(t.state == optuna.trial.TrialState.FAIL for t in orphans)
        trials = [t for t in every if not t.user_attrs.get("orphaned")]
        assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE,
                                             optuna.trial.TrialState.PRUNED}, trials
        assert len(trials) == spec.search.trials  # the budget: none lost, none run twice
    tally["faults survived: launcher (driver) SIGKILLed mid-search"] += 1


NODE_LOSS = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    a = json.loads(sys.argv[1])
    sys.path.insert(0, a["root"])
    import ray
    from search_spaces import load_spec, spec_from_dict
    from study.run import run_study
    from study.tracking import client_for
    from tests._ray_nodes import two_nodes
    from tests._tune import registered_checkpoint

    cluster, worker = two_nodes(a["worker_tmp"])
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    lost = {}

    def remove_the_worker_node_once_a_trial_trains_there():
        client = client_for(a["uri"])
        while True:
            exp = client.get_experiment_by_name(a["study"])
            runs = [] if exp is None else client.search_runs(
                [exp.experiment_id], "attributes.status = 'RUNNING'")
            for r in runs:  # a trial that trains there and has a checkpoint Tune took in
                if "phase" not in r.data.tags:  # the parent run
                    continue
                trial_dirs = list((Path(a["runs"]) / a["study"] / "ray" / "study")
                                  .glob(f"*_{r.data.tags['trial']}_*"))
                if (r.data.tags.get("node_id") == worker.node_id and len(trial_dirs) == 1
                        and registered_checkpoint(trial_dirs[0]) is not None):
                    cluster.remove_node(worker, allow_graceful=False)
                    lost.update(run_id=r.info.run_id, phase=r.data.tags["phase"],
                                t_ms=time.time() * 1000)
                    print("worker node removed", flush=True, file=sys.stderr)
                    return
            time.sleep(0.2)

    threading.Thread(target=remove_the_worker_node_once_a_trial_trains_there,
                     daemon=True).start()
    try:
        data = load_spec("smoke").to_dict()  # 8 evaluation epochs: time to strike
        data["evaluation"] = {**data["evaluation"], "max_epochs": 8, "early_stopping_patience": 8}
        outcome = run_study(spec_from_dict(data, source="smoke.yaml").with_name(a["study"]),
                            Path(a["runs"]) / a["study"], a["uri"],
                            echo=lambda line: print(line, file=sys.stderr, flush=True))
        print(json.dumps({"head": cluster.head_node.node_id, "worker": worker.node_id,
                          "lost": lost, "experiment": outcome.experiment_id,
                          "parent": outcome.parent_run_id,
                          "evaluations": len(outcome.evaluations)}))
    finally:
        ray.shutdown()
        cluster.shutdown()
""")


def test_a_node_removed_mid_study_has_its_trials_rescheduled_on_the_other(
        tmp_path, mlflow_server, mlflow_client):
    """Two Ray nodes (1 CPU each) on this machine; once a trial trains on the worker node, that
    node is removed (its raylet and workers killed, as when a machine is lost): Tune restarts
    the trial from its checkpoint on the head, the study completes, no run is lost."""
    args = {"uri": mlflow_server, "study": "faults-node", "runs": str(tmp_path / "runs")}
    report = run_cluster_script(NODE_LOSS, args, tmp_path, timeout_s=600)
    assert report["lost"], report["stderr"][-4000:]  # the node went while a trial trained there
    tally["faults injected: a node of a two-node cluster removed mid-study"] += 1
    spec = load_spec("smoke")
    outcome = types.SimpleNamespace(experiment_id=report["experiment"],
                                    parent_run_id=report["parent"])
    runs = _check_runs(mlflow_client, spec, outcome)  # one run per trial, histories whole
    victim = mlflow_client.get_run(report["lost"]["run_id"])
    assert victim.info.status in ("FINISHED", "KILLED"), victim.info.status  # KILLED: pruned
    assert victim.data.tags["node_id"] == report["head"]        # rescheduled on the other
    assert victim.data.tags["restored_from"].startswith("checkpoint_")  # from its checkpoint
    after = [r for r in runs if r.info.start_time > report["lost"]["t_ms"]]
    assert all(r.data.tags["node_id"] == report["head"] for r in after)  # (none, if the
    # victim was the last trial to start)
    assert report["evaluations"] == len(spec.variants)           # the study completed
    tally["faults survived: node removed (its trial went on on the other node)"] += 1
