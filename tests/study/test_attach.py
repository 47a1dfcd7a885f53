"""Attaching to a running Ray cluster (``--address``, ``RAY_ADDRESS``), the launcher's cluster
options refused or honoured before anything starts, the MLflow login handed to trials, and
``ray_cluster.yaml`` as Ray's own ``ray up`` reads it (``prepare_config`` + ``validate_config``).
The real multi-host runs are in ``test_multihost.py`` (slow)."""

from __future__ import annotations

import copy
import pickle
import re
import shlex

import pytest
import yaml

from search_spaces import load_spec
from study import cluster
from study.cluster import HEAD_CREDENTIALS, PROJECT_ROOT, ClusterError, make_login
from study.cluster._attach import _uri_is_loopback, resolve_address
from study.launch import main, parse_args
from study.tracking._login import MlflowLogin, driver_login

SHIPPED = PROJECT_ROOT / "ray_cluster.yaml"


# ------------------------------------------------- ray_cluster.yaml as `ray up` reads it


def test_shipped_yaml_passes_rays_own_prepare_and_validate():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(yaml.safe_load(SHIPPED.read_text()))
    validate_config(prepared)                        # what `ray up` runs; raises on errors
    assert prepared["available_node_types"]["head"]["max_workers"] == 0


def test_shipped_yaml_heads_store_is_its_own_postgresql(tmp_path):
    """The head installs Debian's PostgreSQL (non-interactive, only when missing) and starts
    MLflow on the runs folder's own PostgreSQL (Optuna then uses it too), with server workers
    for the trials the cluster can run; as ``ray up`` reads the file."""
    import shlex
    import subprocess

    from ray.autoscaler._private.util import prepare_config, validate_config

    from search_spaces import load_spec
    from study.server import workers_for

    raw = yaml.safe_load(SHIPPED.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    setup = raw["head_setup_commands"]                 # Ray runs them after setup_commands
    assert prepared["head_setup_commands"][-len(setup):] == setup
    install = next(c for c in setup if "apt-get" in c)
    assert "DEBIAN_FRONTEND=noninteractive" in install and " -y " in install
    assert re.search(r"install .*\bpostgresql\b", install)
    assert install.startswith("ls /usr/lib/postgresql/*/bin/pg_ctl")  # idempotent
    server = next(c for c in prepared["head_start_ray_commands"] if "study.server start" in c)
    argv = shlex.split(server.split("python ", 1)[1])
    assert argv[argv.index("--backend-store-uri") + 1] == "postgres"
    trials = cluster.load_cluster_config(SHIPPED).reachable_resources()["GPU"] / (
        load_spec("paper").resources.gpus)
    assert int(argv[argv.index("--workers") + 1]) >= workers_for(int(trials), cpus=4)  # m5.xlarge
    # replayed here, where PostgreSQL is installed: nothing is installed again
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "sudo").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "sudo.log"}\n')
    (stub / "sudo").chmod(0o755)
    for command in setup:
        subprocess.run(["bash", "-c", command], check=True, timeout=60,
                       env={"PATH": f"{stub}:/usr/bin:/bin", "HOME": str(tmp_path)})
    calls = (tmp_path / "sudo.log").read_text() if (tmp_path / "sudo.log").exists() else ""
    assert "apt-get" not in calls


def test_shipped_yaml_uses_a_current_gpu_image_not_rays_ubuntu_18_dlami():
    data = yaml.safe_load(SHIPPED.read_text())
    for name, t in data["available_node_types"].items():
        image = t["node_config"]["ImageId"]
        assert image != "latest_dlami", name        # Ubuntu 18.04, glibc 2.27 in Ray 2.60
        pinned = re.fullmatch(r"ami-[0-9a-f]{8,17}", image)
        dlami = re.fullmatch(r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
                             r"base-oss-nvidia-driver-gpu-ubuntu-(22|24)\.04/\S+", image)
        assert pinned or dlami, image


def test_shipped_yaml_ships_the_login_and_its_head_start_cannot_lack_it():
    data = yaml.safe_load(SHIPPED.read_text())
    assert data["file_mounts"][HEAD_CREDENTIALS] == HEAD_CREDENTIALS
    assert cluster.load_cluster_config(SHIPPED).ships_login()
    cmds = data["head_start_ray_commands"]
    server = next(i for i, c in enumerate(cmds) if "study.server start" in c)
    # made on the head when the file mount did not bring it, before the server needs it
    assert cmds[server - 1] == f"test -s {HEAD_CREDENTIALS} || python -m study.cluster login"
    assert cmds[server].startswith("TLSTUDY_MLFLOW_CREDENTIALS=$HOME/.tlstudy/mlflow_credentials")
    text = SHIPPED.read_text()
    assert "MLFLOW_TRACKING_PASSWORD" not in text   # no secret on any command line


def test_a_bare_head_gets_a_login_from_the_yamls_own_command(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    data = yaml.safe_load(SHIPPED.read_text())
    login = next(c for c in data["head_start_ray_commands"] if "study.cluster login" in c)
    env = {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "PYTHONPATH": str(PROJECT_ROOT)}
    for _ in range(2):                               # the second run keeps the first login
        done = subprocess.run(["bash", "-c", login], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
    creds = tmp_path / ".tlstudy" / "mlflow_credentials"
    user, password = creds.read_text().strip().split(":")
    assert user == "tlstudy" and len(password) >= 12 and creds.stat().st_mode & 0o777 == 0o600
    assert password not in done.stdout + done.stderr


def test_the_plan_makes_the_login_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))       # a machine without the login yet
    steps = cluster.plan(cluster.ClusterRequest(config=SHIPPED, space="paper"),
                         cluster.load_cluster_config(SHIPPED), submission_id="s")
    assert any(s.argv[-3:] == ["-m", "study.cluster", "login"] for s in steps)
    assert steps[-2].argv[1] == "up"


def test_make_login_is_private_and_never_replaced(tmp_path, capsys):
    path = tmp_path / "a" / "creds"
    assert make_login(path)
    user, password = path.read_text().strip().split(":")
    assert len(password) >= 24 and path.stat().st_mode & 0o777 == 0o600
    assert not make_login(path) and path.read_text().strip() == f"{user}:{password}"
    assert cluster.main(["login", "--file", str(path)]) == 0
    assert password not in capsys.readouterr().out


# ---------------------------------------------------------------- the login trials get


def test_login_hides_its_password_and_travels_by_pickle(monkeypatch):
    login = MlflowLogin("tlstudy", "s3cret-password-123")
    assert "s3cret" not in repr(login) and "s3cret" not in str(login)
    again = pickle.loads(pickle.dumps(login))      # how Ray's object store ships it
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    again.apply()
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "tlstudy"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-password-123"


def test_driver_login_from_the_credentials_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("TLSTUDY_MLFLOW_CREDENTIALS", raising=False)
    assert driver_login() is None
    path = tmp_path / "creds"
    make_login(path)
    monkeypatch.setenv("TLSTUDY_MLFLOW_CREDENTIALS", str(path))
    login = driver_login()
    assert login is not None and f"{login.username}:{login.password}" == path.read_text().strip()


def test_on_the_head_the_shipped_login_is_used(tmp_path, monkeypatch):
    path = tmp_path / "creds"
    make_login(path)
    monkeypatch.setattr(cluster, "HEAD_CREDENTIALS", str(path))
    env: dict[str, str] = {}
    cluster.use_head_login(env)
    assert env == {"TLSTUDY_MLFLOW_CREDENTIALS": str(path)}
    mine = {"TLSTUDY_MLFLOW_CREDENTIALS": "/elsewhere"}
    cluster.use_head_login(mine)                    # a login configured otherwise wins
    assert mine == {"TLSTUDY_MLFLOW_CREDENTIALS": "/elsewhere"}


def test_trial_context_repr_shows_no_password():
    from study.phases._trial import TrialContext

    ctx = TrialContext(spec=None, phase="search", rois=None, splits=(),  # type: ignore[arg-type]
                       tracking_uri="http://10.0.0.5:5000", experiment_id="1",
                       parent_run_id="p", tags={}, login=MlflowLogin("u", "pw-never-shown-1"))
    assert "pw-never-shown-1" not in repr(ctx)


# ---------------------------------------------------------------- --address and RAY_ADDRESS


@pytest.mark.parametrize("flag, env, expected", [
    (None, {}, None),                                       # a local Ray of this machine
    (None, {"RAY_ADDRESS": "10.0.0.5:6379"}, "10.0.0.5:6379"),   # as Ray's tools honour it
    ("auto", {"RAY_ADDRESS": "10.0.0.5:6379"}, "auto"),     # the flag wins
    ("ray://head.lab:10001", {}, "ray://head.lab:10001"),
    ("[fd00::5]:6379", {}, "[fd00::5]:6379"),
    (None, {"RAY_ADDRESS": ""}, None),
])
def test_address_comes_from_the_flag_then_ray_address(flag, env, expected):
    assert resolve_address(flag, env) == expected


@pytest.mark.parametrize("flag, env, message", [
    ("10.0.0.5", {}, "--address='10.0.0.5': expected HOST:PORT"),
    ("http://10.0.0.5:8265", {}, "expected HOST:PORT"),
    (None, {"RAY_ADDRESS": "head:99999"}, "RAY_ADDRESS='head:99999'"),
    ("local", {}, "--address=local starts a new Ray"),
])
def test_an_address_ray_would_not_understand_is_refused(flag, env, message):
    with pytest.raises(ClusterError, match=re.escape(message)):
        resolve_address(flag, env)


def test_bad_ray_address_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "not an address")
    assert main(["--smoke-test", "--runs-dir", str(tmp_path)]) == 2
    assert "RAY_ADDRESS='not an address': expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--cluster", str(SHIPPED), "--address", "auto"], "use one of them"),
    (["--cluster", str(SHIPPED), "--runs-dir", "elsewhere"], "~/tlstudy-runs"),
    (["--max-concurrent-trials", "0"], "must be 1 or more"),
])
def test_cluster_options_that_would_be_ignored_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_declared_trial_limit_and_address_are_parsed():
    args = parse_args(["--address", "10.0.0.5:6379", "--max-concurrent-trials", "16"])
    assert (args.address, args.max_concurrent_trials) == ("10.0.0.5:6379", 16)
    assert str(args.runs_dir) == "runs"
    on_head = parse_args(["--on-head", "--cluster", "c.yaml", "--runs-dir", "/h/runs"])
    assert str(on_head.runs_dir) == "/h/runs"       # the head's own --runs-dir stays allowed


@pytest.mark.parametrize("uri, loopback", [
    ("http://127.0.0.1:5000", True), ("http://localhost:5000", True), ("http://[::1]:5", True),
    ("http://10.0.0.5:5000", False), ("https://mlflow.lab.org", False)])
def test_loopback_tracking_uris_are_told_apart(uri, loopback):
    assert _uri_is_loopback(uri) is loopback


# ---------------------------------------------------------------- on the head


def test_on_head_without_a_server_or_login_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "TLSTUDY_MLFLOW_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ClusterError, match="the head's MLflow server .* is not running and "
                                           "could not be started"):
        cluster.head_settings(SHIPPED, tmp_path, None, echo=lambda _: None)


def test_invalid_yaml_edit_is_caught_by_rays_validate_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    data = copy.deepcopy(yaml.safe_load(SHIPPED.read_text()))
    data["available_node_types"]["gpu_a10g"]["min_workers"] = 9   # more than max_workers: 4
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(data))


# ------------------------------------------------- the KubeRay RayJob (shipped, not run)


def test_kuberay_rayjob_runs_an_entrypoint_the_launcher_accepts_and_holds_no_secret():
    import shlex

    import ray

    path = PROJECT_ROOT / "docs" / "kuberay-rayjob.yaml"
    job = yaml.safe_load(path.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "study.launch"]
    args = parse_args(argv[3:])                     # RAY_ADDRESS (set by Ray) makes it attach
    assert args.max_concurrent_trials and args.storage_path.startswith("s3://")
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    login = env["TLSTUDY_MLFLOW_CREDENTIALS"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert login.startswith(mounts["mlflow-login"] + "/")      # read from the mounted Secret
    volumes = {v["name"]: v for v in head["volumes"]}
    assert volumes["mlflow-login"]["secret"]["defaultMode"] == 0o400
    text = path.read_text()
    assert "MLFLOW_TRACKING_PASSWORD" not in text and "password" not in text.lower()
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:   # no login on the workers
        assert "mlflow-login" not in str(group)


def test_cluster_job_passes_the_declared_trial_limit_to_the_driver():
    request = cluster.ClusterRequest(config=SHIPPED, space="paper", max_concurrent_trials=8)
    argv = cluster.driver_argv(request)
    assert argv[argv.index("--max-concurrent-trials") + 1] == "8"
    assert "--max-concurrent-trials" not in cluster.driver_argv(
        cluster.ClusterRequest(config=SHIPPED, space="paper"))


def test_failed_trials_are_reported_as_a_failure_with_the_reason():
    from study.phases._run import TrialsFailed, _failed

    err = _failed("search", [RuntimeError("Traceback (most recent call last):\n  File x\n"
                                          "ValueError: the checkpoint is unreadable"), None])
    assert isinstance(err, TrialsFailed) and not isinstance(err, KeyboardInterrupt)
    assert str(err).startswith("search: 2 trial(s) failed after their retries")
    assert "ValueError: the checkpoint is unreadable" in str(err)


def test_the_space_is_checked_against_what_the_autoscaler_can_reach():
    from study.cluster._attach import reachable

    now = {"CPU": 4.0, "memory": 1e9}               # a KubeRay head; no GPU pod up yet
    assert reachable(now, None) == now
    assert reachable(now, {"CPU": 32.0, "GPU": 4.0}) == {"CPU": 32.0, "GPU": 4.0,
                                                          "memory": 1e9}
    assert reachable({"CPU": 64.0}, {"CPU": 32.0})["CPU"] == 64.0   # more up than declared


# ------------------------------------------------- ray:// (Ray Client): refused, what instead


def test_ray_client_refusal_says_why_and_prints_a_job_line_and_a_gcs_line():
    from study.cluster._client import Endpoints, refusal

    ends = Endpoints("10.0.0.5:6379", "127.0.0.1:8265", asked=True)
    text = refusal("ray://10.0.0.5:10001", "--address", ends,
                   ["--space", "paper", "--runs-dir", "~/tlstudy-runs"])
    assert text.startswith("--address=ray://10.0.0.5:10001 is Ray Client, which cannot run")
    assert "Nothing was started" in text and "the addresses the cluster reported" in text
    lines = [line.strip() for line in text.splitlines()]
    job = shlex.split(next(line for line in lines if line.startswith("ray job submit")))
    assert job[:5] == ["ray", "job", "submit", "--address", "http://127.0.0.1:8265"]
    assert "--submission-id" not in job             # the same line can be run again
    assert job[job.index("--") + 1:] == ["python", "-m", "study.launch", "--space", "paper",
                                          "--runs-dir", "~/tlstudy-runs"]  # ~ left for the head
    assert "ssh -L 8265:127.0.0.1:8265 HEAD" in text   # the dashboard binds the head's loopback
    gcs = shlex.split(next(line for line in lines if line.startswith("python -m study.launch")))
    assert gcs[3:5] == ["--address", "10.0.0.5:6379"]
    assert parse_args(gcs[3:]).address == "10.0.0.5:6379"   # what the launcher accepts


def test_ray_client_refusal_without_an_answer_uses_rays_default_ports():
    from study.cluster._client import Endpoints, refusal

    ends = Endpoints("head.lab:6379", "head.lab:8265", asked=False, error="connection refused")
    text = refusal("ray://head.lab:10001", "RAY_ADDRESS", ends, ["--smoke-test"])
    assert text.startswith("RAY_ADDRESS=ray://head.lab:10001 is Ray Client")
    assert "Ray's default ports: the cluster could not be asked (connection refused)" in text
    assert "--address http://head.lab:8265" in text and "ssh -L" not in text


@pytest.mark.parametrize("argv, expected", [
    (["--smoke-test"], ["--smoke-test", "--runs-dir", "~/tlstudy-runs"]),
    (["--space", "paper", "--runs-dir", "/srv/runs", "--study", "s", "--resume", "-v"],
     ["--space", "paper", "--study", "s", "--runs-dir", "/srv/runs", "--resume", "-v"]),
    ([], ["--space", "search_spaces/quick.yaml", "--runs-dir", "~/tlstudy-runs"]),
    (["--space", "search_spaces/smoke.yaml", "--data", "/d", "--data-format", "bcdr",
      "--storage-path", "s3://b/p", "--max-concurrent-trials", "4",
      "--tracking-uri", "http://m:5000", "--runs-dir", "~/r"],
     ["--space", "search_spaces/smoke.yaml", "--data", "/d", "--data-format", "bcdr",
      "--runs-dir", "~/r", "--tracking-uri", "http://m:5000", "--storage-path", "s3://b/p",
      "--max-concurrent-trials", "4"]),
])
def test_the_options_forwarded_to_the_cluster(argv, expected, monkeypatch):
    from study.launch import forwarded_options

    monkeypatch.chdir(PROJECT_ROOT)
    args = parse_args(["--address", "ray://h:10001", *argv])
    spec = load_spec("quick")                       # the space the launch resolved
    assert forwarded_options(args, spec) == expected


def test_a_relative_runs_dir_is_forwarded_as_an_absolute_one(tmp_path, monkeypatch):
    from study.launch import forwarded_options

    monkeypatch.chdir(tmp_path)
    args = parse_args(["--smoke-test", "--runs-dir", "mine"])
    assert forwarded_options(args, None)[-2:] == ["--runs-dir", str(tmp_path / "mine")]


def test_ray_client_is_refused_before_the_space_is_checked_further(monkeypatch, tmp_path,
                                                                   capsys):
    from study.cluster import _client

    asked = []
    monkeypatch.setattr(_client, "cluster_endpoints", lambda a: asked.append(a) or
                        _client.Endpoints("10.0.0.5:6379", "10.0.0.5:8265", asked=True))
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.5:10001")
    assert main(["--smoke-test", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert asked == ["ray://10.0.0.5:10001"]
    assert "RAY_ADDRESS=ray://10.0.0.5:10001 is Ray Client" in err
    assert not (tmp_path / "runs").exists()          # no lock, no data, no server
