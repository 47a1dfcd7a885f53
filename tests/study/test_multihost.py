"""The real multi-host path on two real raylets of this machine: ``ray start --head`` and
``ray start --address`` (separate temp dirs, token authentication, both bound to this machine's
non-loopback address), the MLflow server bound to that address with its login on, and the
credentials on the head only, as on a cloud: trials on the worker raylet log in with what the
driver hands them through Ray (``study.tracking._login``).

- attached: ``python -m study.launch --address HOST:PORT`` from outside the cluster;
- the cluster path: the head's start commands of ``ray_cluster.yaml`` replayed (login made,
  server started on the runs folder's own PostgreSQL, as on the cluster's head), then the
  driver submitted with the ``ray job submit`` line ``--cluster`` builds.

The head's home lies under pytest's 0700 temporary folder, which the ``postgres`` user that
PostgreSQL runs as (we are root) cannot enter: its database goes to that user's home, linked
from the runs folder (``study.tracking._postgres``), and is dropped at the end.

Each: trials on both nodes (``node_id`` tags), every run ended, and the password in no file
the study, MLflow, Tune or Ray wrote (logs included). A smoke study each: minutes on 2 cores.

Faults on the two raylets: the worker node killed mid-study; the runs folder's PostgreSQL
(MLflow's and Optuna's store) stopped for 10 s mid-search and started again, then the driver
killed and ``--resume``d — nothing lost, nothing twice.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from search_spaces import load_spec
from study.cluster import PROJECT_ROOT, ClusterRequest, driver_argv, job_submit_argv
from study.tracking import _postgres as pg
from study.tracking import child_runs, client_for
from tests._ray_nodes import RayStartCluster, own_ip, quiet_port, submit_job

pytestmark = pytest.mark.slow

_SECRET_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "TLSTUDY_MLFLOW_CREDENTIALS", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


def _bare_env() -> dict[str, str]:
    """This environment without any MLflow login or Ray address; the venv's ``python`` and
    ``ray`` first on PATH (as the nodes' venv is)."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARS}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["RAY_AUTH_MODE"] = "token"
    return env


@pytest.fixture(scope="module")
def head_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The head's home: its login made by the YAML's own head start command, replayed."""
    home = tmp_path_factory.mktemp("head-home")
    login = _head_commands()[0]
    subprocess.run(["bash", "-c", login], env={**_bare_env(), "HOME": str(home)},
                   cwd=home, check=True, capture_output=True, timeout=120)
    creds = home / ".tlstudy" / "mlflow_credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    return home


@pytest.fixture(scope="module")
def raylets(head_home: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[RayStartCluster, list[str]]]:
    folder = tmp_path_factory.mktemp("raylets")
    creds = head_home / ".tlstudy" / "mlflow_credentials"
    head_env = {**_bare_env(), "TLSTUDY_MLFLOW_CREDENTIALS": str(creds)}  # the head only
    with RayStartCluster(own_ip(), folder, head_env=head_env, worker_env=_bare_env()) as c:
        ids = c.start()
        yield c, ids


def _head_commands() -> list[str]:
    """``ray_cluster.yaml``'s head start commands after ``ray start``: make the login, start
    the MLflow server."""
    data = yaml.safe_load((PROJECT_ROOT / "ray_cluster.yaml").read_text())
    cmds = [c for c in data["head_start_ray_commands"] if "study." in c]
    assert len(cmds) == 2 and "study.cluster login" in cmds[0] and "study.server" in cmds[1]
    return cmds


def _password(head_home: Path) -> str:
    return (head_home / ".tlstudy" / "mlflow_credentials").read_text().strip().split(":", 1)[1]


def _client(uri: str, head_home: Path, monkeypatch: pytest.MonkeyPatch):
    user, password = (head_home / ".tlstudy" / "mlflow_credentials").read_text().strip().split(
        ":", 1)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return client_for(uri)


def _check_study(client, study: str, nodes: list[str], *, on_every_node: bool = True) -> None:
    """The study finished: one parent, every trial's run ended with its epochs ``1..n`` once,
    on the cluster's nodes (on every one of them unless ``on_every_node`` is False: after a
    killed driver, a trial interrupted on one node may run again, and be tagged, elsewhere)."""
    exp = client.get_experiment_by_name(study)
    assert exp is not None, study
    parents = [r for r in client.search_runs([exp.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    runs = child_runs(client, exp.experiment_id, parents[0].info.run_id)
    spec = load_spec("smoke")
    assert len(runs) == len(spec.variants) * (spec.search.trials + 1)   # search + evaluation
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), \
        [(r.info.status, r.data.tags.get("failure_reason")) for r in runs]
    for r in runs:                                   # each run's epochs all there, once
        history = client.get_metric_history(r.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == list(range(1, len(history) + 1)), history
        assert len(history) >= 1
    landed = {r.data.tags["node_id"] for r in runs}
    assert landed == set(nodes) if on_every_node else landed <= set(nodes), landed


def _nowhere(secret: str, *folders: Path | str) -> None:
    """``secret`` in no file under ``folders`` (logs, stores, checkpoints)."""
    needle = secret.encode()
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and not path.is_symlink() and not path.name.endswith(".sock"):
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                assert needle not in data, f"the MLflow password is in {path}"


def _run(argv: list[str], env: dict[str, str], log: Path, timeout_s: float) -> int:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{shlex.join(argv)} timed out:\n{log.read_text()[-5000:]}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_a_study_attached_with_address_runs_trials_on_both_raylets(
        raylets, head_home, tmp_path, monkeypatch):
    cluster, nodes = raylets
    runs = tmp_path / "runs"
    env = {**cluster.head_env}                      # the driver's machine has the login
    argv = _attach_argv(cluster, "smoke-attach", tmp_path)
    log = tmp_path / "driver.log"
    try:
        rc = _run(argv, env, log, timeout_s=600)
        out = log.read_text()
        assert rc == 0, out[-6000:]
        assert f"Ray: attached to {cluster.address}" in out
        ip = cluster.ip
        assert f"MLflow: trials log to http://{ip}:" in out          # not loopback: login on
        record = yaml.safe_load((runs / "mlflow" / "server.json").read_text())
        assert record["host"] == ip and record["auth"] == "basic-auth"
        _check_study(_client(record["url"], head_home, monkeypatch), "smoke-attach", nodes)
        _nowhere(_password(head_home), tmp_path, *cluster.temp_dirs)
    finally:
        subprocess.run([sys.executable, "-m", "study.server", "stop", "--runs-dir", str(runs)],
                       env=env, capture_output=True, timeout=60)


def test_the_cluster_job_path_with_the_yamls_head_commands(raylets, head_home, tmp_path,
                                                           monkeypatch):
    cluster, nodes = raylets
    # the YAML's server start, replayed on the head: its ~ is the head's home; this machine's
    # address instead of 0.0.0.0 (nothing exposed beyond it), a free port instead of 5000
    start = _head_commands()[1].replace("--host 0.0.0.0", f"--host {cluster.ip}")
    port = quiet_port()
    start = start.replace("--port 5000", f"--port {port}")
    head_env = {**_bare_env(), "HOME": str(head_home)}
    done = subprocess.run(["bash", "-c", start], env=head_env, cwd=head_home,
                          capture_output=True, text=True, timeout=300)
    runs = head_home / "tlstudy-runs"
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({
            "cluster_name": "two-raylets", "max_workers": 1,
            "provider": {"type": "local", "head_ip": cluster.ip, "worker_ips": [cluster.ip]},
            "auth": {"ssh_user": "nobody"}, "head_node_type": "head",
            "available_node_types": {
                "head": {"resources": {"CPU": 1}, "node_config": {}},
                "worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 1,
                           "max_workers": 1}}}))
        request = ClusterRequest(config=config, space="smoke", study="smoke-job",
                                 storage_path=str(tmp_path / "shared"))
        entry = driver_argv(request, cluster_config=str(config), runs_dir=str(runs))
        entry[entry.index("--space") + 1] = str(_longer_smoke(tmp_path))  # see _longer_smoke
        argv = job_submit_argv(entry, submission_id=f"smoke-job-{time.time_ns()}",
                               working_dir=str(PROJECT_ROOT), address=cluster.job_address,
                               ray=str(Path(sys.executable).parent / "ray"))
        log = tmp_path / "job.log"
        rc, out = submit_job(lambda: (_run(argv, cluster.head_env, log, timeout_s=600),
                                      log.read_text()), session_dirs=cluster.temp_dirs)
        assert rc == 0, out[-6000:]
        assert f"MLflow on the head: http://{cluster.ip}:{port}" in out
        # as on the cluster: MLflow and Optuna on the head's own PostgreSQL, login on
        record = yaml.safe_load((runs / "mlflow" / "server.json").read_text())
        assert (record["store"], record["workers"], record["auth"]) == (
            "postgres", 2, "basic-auth"), record
        assert record["backend_uri"] == pg.postgres_status(runs).url("mlflow")  # type: ignore[union-attr]
        assert not (runs / "smoke-job" / "optuna.db").exists()
        _check_study(_client(f"http://{cluster.ip}:{port}", head_home, monkeypatch),
                     "smoke-job", nodes)
        _check_optuna(runs, "smoke-job")
        _nowhere(_password(head_home), tmp_path, runs, *cluster.temp_dirs)
    finally:
        subprocess.run([sys.executable, "-m", "study.server", "stop", "--runs-dir", str(runs)],
                       env=head_env, capture_output=True, timeout=60)
        pg.drop_postgres(runs)


def _check_optuna(runs: Path, study: str) -> None:
    """Optuna's studies on the runs folder's PostgreSQL: per group, the search budget, each
    trial finished once (those a killed driver asked and never ran: failed, ``orphaned``)."""
    import optuna

    spec = load_spec("smoke")
    url = pg.postgres_status(runs).url("optuna")  # type: ignore[union-attr]
    for v in spec.variants:
        every = optuna.load_study(study_name=f"{study}/{v}/split0", storage=url).trials
        orphans = [t for t in every if t.user_attrs.get("orphaned")]
        assert all(t.state == optuna.trial.TrialState.FAIL for t in orphans), orphans
        trials = [t for t in every if not t.user_attrs.get("orphaned")]
        assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE,
                                             optuna.trial.TrialState.PRUNED}, trials
        assert len(trials) == spec.search.trials, trials


# ---------------------------------------------------------------- faults on the two raylets


def _attach_argv(cluster: RayStartCluster, study: str, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "study.launch", "--address", cluster.address,
            "--space", str(_longer_smoke(tmp_path)), "--study", study,
            "--runs-dir", str(tmp_path / "runs"),
            "--storage-path", str(tmp_path / "shared"), "--max-concurrent-trials", "2", *extra]


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(what, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    """Poll ``what()`` until true; fail with the driver's log if the driver ends first."""
    deadline = time.monotonic() + timeout_s
    while not what():
        assert proc.poll() is None, f"the driver ended first:\n{log.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-5000:]}"
        time.sleep(1)


def _epochs_on(client, study: str, node_id: str) -> int:
    """Epochs MLflow holds from trials that ran on ``node_id``."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return 0
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.node_id = '{node_id}'")
    return sum(len(client.get_metric_history(r.info.run_id, "val_loss")) for r in runs)


def _server_url(tmp_path: Path) -> str:
    return str(yaml.safe_load((tmp_path / "runs" / "mlflow" / "server.json").read_text())["url"])


def test_the_worker_node_killed_mid_study(head_home, tmp_path, tmp_path_factory, monkeypatch):
    """A machine lost: its trials restart from their checkpoints on the head; every run ends,
    every epoch is in MLflow once."""
    creds = head_home / ".tlstudy" / "mlflow_credentials"
    head_env = {**_bare_env(), "TLSTUDY_MLFLOW_CREDENTIALS": str(creds)}
    folder = tmp_path_factory.mktemp("raylets-kill")
    with RayStartCluster(own_ip(), folder, head_env=head_env, worker_env=_bare_env()) as c:
        c.start()
        log = tmp_path / "driver.log"
        proc = _start(_attach_argv(c, "smoke-kill", tmp_path), c.head_env, log)
        try:
            _wait_for(lambda: (tmp_path / "runs" / "mlflow" / "server.json").is_file(), proc, log)
            client = _client(_server_url(tmp_path), head_home, monkeypatch)
            _wait_for(lambda: _epochs_on(client, "smoke-kill", c.worker_id) >= 1, proc, log)
            c.kill_worker()
            rc = proc.wait(timeout=900)
            out = log.read_text()
            assert rc == 0, out[-6000:]
            exp = client.get_experiment_by_name("smoke-kill")
            parent = next(r for r in client.search_runs([exp.experiment_id])
                          if "mlflow.parentRunId" not in r.data.tags)
            runs = child_runs(client, exp.experiment_id, parent.info.run_id)
            assert parent.info.status == "FINISHED"
            spec = load_spec("smoke")
            assert len(runs) == len(spec.variants) * (spec.search.trials + 1)
            assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
            for r in runs:
                steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")]
                assert sorted(steps) == list(range(1, len(steps) + 1)), (r.data.tags, steps)
            # the trials of the lost node went on elsewhere from their checkpoints, or had
            # ended before it went: none is left unfinished on the dead node
            lost = [r for r in runs if r.data.tags.get("node_id") == c.worker_id
                    and r.info.status not in ("FINISHED", "KILLED")]
            assert not lost, lost
            moved = [r for r in runs if "restored_from" in r.data.tags]
            print(f"trials restored after the node loss: {len(moved)}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run([sys.executable, "-m", "study.server", "stop", "--runs-dir",
                            str(tmp_path / "runs")], env=head_env, capture_output=True)


def _longer_smoke(folder: Path) -> Path:
    """smoke.yaml with 6-epoch trials (search and evaluation): epochs end while a fault lasts,
    and trials outlast the start of a second node's trial actor. (Tune hands a trial waiting
    for a new actor to a cached one that frees first, ``TuneController.
    _maybe_reuse_cached_actor``; smoke's 1-second trials all finish on the node whose actor
    came up first.)"""
    data = yaml.safe_load((PROJECT_ROOT / "search_spaces" / "smoke.yaml").read_text())
    data["search"]["asha"]["max_epochs"] = 6
    data["evaluation"].update(max_epochs=6, early_stopping_patience=6)
    path = folder / "smoke6.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _training_now(client, study: str) -> bool:
    """A trial's run is RUNNING with an epoch logged and epochs still to train."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return False
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
        if "phase" in r.data.tags and 1 <= len(
                client.get_metric_history(r.info.run_id, "val_loss")) <= 3:
            return True
    return False


def test_postgres_restarted_then_the_driver_killed_then_resume(raylets, head_home, tmp_path,
                                                              monkeypatch):
    """On the runs folder's own PostgreSQL (MLflow's store and Optuna's), login on: the
    database stopped for 10 s mid-search while a trial trains (6-epoch trials), then started
    again on the same socket; the trials go on logging. Then the driver's process killed (its
    trials die with it); ``--resume`` continues the same parent run: nothing lost, nothing
    twice, Table 1 rebuilt."""
    cluster, nodes = raylets
    runs = tmp_path / "runs"
    store = ("--backend-store-uri", "postgres", "--server-workers", "2")
    log = tmp_path / "driver.log"
    argv = _attach_argv(cluster, "smoke-pg", tmp_path, *store)
    try:  # the server and the database go at the end, whatever fails
        proc = _start(argv, cluster.head_env, log)
        try:
            _wait_for(lambda: (runs / "mlflow" / "server.json").is_file(), proc, log)
            client = _client(_server_url(tmp_path), head_home, monkeypatch)
            _wait_for(lambda: _training_now(client, "smoke-pg"), proc, log)
            before = pg.postgres_status(runs)
            assert before is not None
            down_at = time.time()
            assert pg.stop_postgres(runs)               # the database goes away mid-study
            time.sleep(10)
            after = pg.ensure_postgres(runs)            # and comes back on the same socket
            up_at = time.time()
            assert after.pid != before.pid and after.url("mlflow") == before.url("mlflow")
            epochs = sum(_epochs_on(client, "smoke-pg", n) for n in nodes)
            # the study goes on: trials log again through the same server and database
            _wait_for(lambda: sum(_epochs_on(client, "smoke-pg", n) for n in nodes) > epochs,
                      proc, log)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)         # then the driver is killed
            proc.wait()
        time.sleep(5)   # Ray notices the driver gone and ends its trials
        again = tmp_path / "resume.log"
        rc = _run([*argv, "--resume"], cluster.head_env, again, timeout_s=900)
        out = again.read_text()
        assert rc == 0, out[-6000:]
        assert "Table 1" in out
        record = yaml.safe_load((runs / "mlflow" / "server.json").read_text())
        assert (record["store"], record["auth"]) == ("postgres", "basic-auth"), record
        exp = client.get_experiment_by_name("smoke-pg")
        parents = [r for r in client.search_runs([exp.experiment_id])
                   if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1                     # the same execution, continued
        _check_study(client, "smoke-pg", nodes, on_every_node=False)  # histories whole, once
        runs_ = child_runs(client, exp.experiment_id, parents[0].info.run_id)
        search = [r for r in runs_ if r.data.tags["phase"] == "search"]
        assert len(search) == len({r.data.tags["trial"] for r in search})  # one run per trial
        table = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
        assert "table1.json" in table, table         # Table 1 rebuilt from MLflow
        _check_optuna(runs, "smoke-pg")
        during = [m for r in runs_ for m in client.get_metric_history(r.info.run_id, "val_loss")
                  if down_at <= m.timestamp / 1000 <= up_at]
        # the fault met the study: the driver waited for Optuna's database (its trials wait in
        # their report meanwhile), or trials logged epochs that the server stored afterwards
        waits = log.read_text().count("Optuna's database is unreachable")
        assert waits or during, "the outage met neither the driver nor a trial"
        print(f"\nPostgreSQL down {up_at - down_at:.1f} s; epochs in MLflow before the "
              f"restart: {epochs}; epochs trained while it was down, in MLflow now: "
              f"{len(during)}; the driver's Optuna calls retried: {waits}; runs: "
              f"{len(runs_)}, epochs: "
              f"{sum(len(client.get_metric_history(r.info.run_id, 'val_loss')) for r in runs_)}")
    finally:
        subprocess.run([sys.executable, "-m", "study.server", "stop", "--runs-dir",
                        str(runs)], env=cluster.head_env, capture_output=True)
        pg.drop_postgres(runs)
