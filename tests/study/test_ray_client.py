"""``--address ray://HOST:PORT`` (Ray Client) against a real Ray head started with a Ray Client
server (``ray start --head --ray-client-server-port``, its own temp dir, token authentication,
bound to this machine's non-loopback address, the MLflow login in the head's environment only).

The launcher refuses Ray Client before anything starts (``study.cluster._client`` says why:
Tune would run the study's driver loop in an actor on the head) and prints two command lines
instead; each is pasted as printed, in a shell, and must run the smoke study on that cluster to
its end: every run ended, every epoch in MLflow, the report written, every trial on the
cluster's node. Minutes each on 2 cores.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from study.cluster import PROJECT_ROOT, make_login
from tests._ray_nodes import RayStartCluster, own_ip, submit_job
from tests.study.test_multihost import _bare_env, _check_study, _client, _nowhere, _password, _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("client-head-home")
    make_login(home / ".tlstudy" / "mlflow_credentials")
    return home


@pytest.fixture(scope="module")
def head(head_home: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[RayStartCluster]:
    """One head node with a Ray Client server and a dashboard (for jobs); the MLflow login in
    its environment only (the machine with the Ray Client has none)."""
    creds = head_home / ".tlstudy" / "mlflow_credentials"
    head_env = {**_bare_env(), "TLSTUDY_MLFLOW_CREDENTIALS": str(creds)}
    with RayStartCluster(own_ip(), tmp_path_factory.mktemp("client-head"), head_env=head_env,
                         worker_env=_bare_env()) as cluster:
        cluster.start(worker=False)
        yield cluster


def _refused(head: RayStartCluster, study: str, runs: Path) -> tuple[str, str]:
    """Launch with ``--address ray://``: refused (exit 2) before anything starts; returns the
    two command lines printed instead (the ``ray job submit`` one, the ``--address GCS`` one)."""
    argv = [sys.executable, "-m", "study.launch", "--address", head.client_address,
            "--smoke-test", "--study", study, "--runs-dir", str(runs),
            "--max-concurrent-trials", "1"]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=_bare_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr
    assert f"--address={head.client_address} is Ray Client, which cannot run a study" in err
    assert "Nothing was started" in err and "the addresses the cluster reported" in err
    assert not runs.exists()                        # no lock, no data, no MLflow server
    lines = [line.strip() for line in err.splitlines()]
    job = next(line for line in lines if line.startswith("ray job submit "))
    attach = next(line for line in lines if line.startswith("python -m study.launch "))
    assert f"--address {head.job_address}" in job   # the dashboard the head reported
    assert f"--address {head.address} " in attach   # the head's GCS address
    for line in (job, attach):
        assert "ray://" not in line and f"--runs-dir {runs}" in line
    return job, attach


def _check_report(runs: Path, study: str) -> None:
    report = runs / study / "report" / "report.html"
    assert report.is_file() and "Table 1" in report.read_text(errors="replace")


def _stop_server(runs: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "study.server", "stop", "--runs-dir", str(runs)],
                   env=env, capture_output=True, timeout=60)


def test_ray_client_refused_and_the_printed_ray_job_line_runs_the_study(
        head, head_home, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    job, _ = _refused(head, "smoke-client-job", runs)
    log = tmp_path / "job.log"
    try:
        rc, out = submit_job(lambda: (_run(["bash", "-c", job], _bare_env(), log,  # pasted as is
                                           timeout_s=900), log.read_text()),
                             session_dirs=head.temp_dirs)
        assert rc == 0, out[-6000:]
        assert f"Ray: attached to {head.address}" in out   # the job's RAY_ADDRESS, not ray://
        record = yaml.safe_load((runs / "mlflow" / "server.json").read_text())
        _check_study(_client(record["url"], head_home, monkeypatch), "smoke-client-job",
                     [head.head_id])
        _check_report(runs, "smoke-client-job")
        _nowhere(_password(head_home), tmp_path, *head.temp_dirs)
    finally:
        _stop_server(runs, head.head_env)


def test_ray_client_refused_and_the_printed_gcs_line_runs_the_study_on_the_cluster(
        head, head_home, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _, attach = _refused(head, "smoke-client-gcs", runs)
    log = tmp_path / "driver.log"
    try:   # pasted on a machine of the cluster (this one), which has the login
        rc = _run(["bash", "-c", attach], head.head_env, log, timeout_s=900)
        out = log.read_text()
        assert rc == 0, out[-6000:]
        assert f"Ray: attached to {head.address}" in out
        record = yaml.safe_load((runs / "mlflow" / "server.json").read_text())
        _check_study(_client(record["url"], head_home, monkeypatch), "smoke-client-gcs",
                     [head.head_id])
        _check_report(runs, "smoke-client-gcs")
        assert shlex.split(attach)[:3] == ["python", "-m", "study.launch"]
    finally:
        _stop_server(runs, head.head_env)
