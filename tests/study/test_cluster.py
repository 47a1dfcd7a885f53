"""The cluster: ray_cluster.yaml against Ray's schema and our security rules, the commands
``--cluster`` builds, its errors before anything starts, and a real two-node Ray cluster on
this machine running the smoke study as a Ray job (trials on both nodes, one MLflow server).

Nothing here reaches a cloud: where a step needs one, the test stops at the command line it
would run or at the error it gives without credentials.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from search_spaces import load_spec
from study import cluster
from study.cluster import (
    HEAD_CONFIG,
    HEAD_RUNS_DIR,
    MLFLOW_PORT,
    PROJECT_ROOT,
    TOKEN_FILE,
    ClusterError,
    ClusterRequest,
    check_trials_fit,
    load_cluster_config,
    ray_schema,
)
from study.tracking import child_runs
from tests._ray_nodes import quiet_port, run_cluster_script

SHIPPED = PROJECT_ROOT / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, data: dict, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- ray_cluster.yaml


def test_shipped_config_validates_against_rays_own_schema(shipped):
    import jsonschema

    jsonschema.Draft7Validator(ray_schema()).validate(shipped)   # raises on any error
    config = load_cluster_config(SHIPPED)
    assert config.provider == "aws"
    assert config.project_mount() == "~/tlstudy"


def test_shipped_config_has_gpu_workers_and_keeps_trials_off_the_head(shipped):
    config = load_cluster_config(SHIPPED)
    types = shipped["available_node_types"]
    head = shipped["head_node_type"]
    assert types[head]["resources"]["CPU"] == 0            # the head runs no trial
    gpu_types = [n for n, t in types.items()
                 if n != head and t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1]
    assert gpu_types
    assert all(types[n].get("min_workers", 0) == 0 for n in gpu_types)  # no idle GPU bills
    # the paper's protocol runs there, two trials per GPU (1 CPU + 0.5 GPU each)
    paper = load_spec("paper")
    node = check_trials_fit(paper, config)
    res = types[node]["resources"]
    assert min(res["CPU"] // paper.resources.cpus, res["GPU"] // paper.resources.gpus) == 2
    assert config.reachable_resources()["GPU"] >= 1


def _world(rule: dict) -> bool:
    return (any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
            or any(r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", [])))


def test_shipped_config_opens_no_port_to_the_world_but_ssh(shipped):
    rules = shipped["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        if _world(rule):
            assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), rule
        assert not (rule.get("FromPort", 0) <= MLFLOW_PORT <= rule.get("ToPort", 0)), rule
        assert not (rule.get("FromPort", 0) <= 8265 <= rule.get("ToPort", 0)), rule
    for t in shipped["available_node_types"].values():   # Ray's own group: no other rules
        assert "SecurityGroupIds" not in t["node_config"]
    head_start = " ".join(shipped["head_start_ray_commands"])
    worker_start = " ".join(shipped["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "dashboard-host=0.0.0.0" not in head_start + worker_start
    for start in (head_start, worker_start):                # Ray's token auth on every node
        assert "RAY_AUTH_MODE=token ray start" in start
    assert shipped["file_mounts"][TOKEN_FILE] == TOKEN_FILE
    assert f"--autoscaling-config={HEAD_CONFIG}" in head_start
    # the head's MLflow server: where --on-head looks for it
    assert f"study.server start --study-dir {HEAD_RUNS_DIR}" in head_start
    assert f"--port {MLFLOW_PORT}" in head_start


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["available_node_types"]["gpu_a10g"]["resources"].update(GPU=0.5),
     "available_node_types.gpu_a10g.resources.GPU: 0.5 is not of type 'integer'"),
    (lambda c: c.update(max_worker=3),
     "(top level): Additional properties are not allowed ('max_worker' was unexpected)"),
    (lambda c: c["provider"].pop("type"),
     "provider: 'type' is a required property"),
    (lambda c: c.update(head_node_type="cpu_head"),
     "head_node_type: 'cpu_head' is not one of available_node_types"),
])
def test_invalid_config_is_refused_naming_file_and_key(tmp_path, shipped, edit, expected):
    data = copy.deepcopy(shipped)
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ClusterError) as err:
        load_cluster_config(path)
    assert f"{path}: {expected}" in str(err.value)


def test_gpu_study_on_a_cluster_without_gpus_is_refused(tmp_path, shipped):
    data = copy.deepcopy(shipped)
    data["available_node_types"]["gpu_a10g"]["resources"] = {"CPU": 8}
    config = load_cluster_config(_write(tmp_path, data))
    with pytest.raises(ClusterError, match=r"paper.yaml: resources: no node type .* can run a "
                                           r"trial \(1 CPUs, 0.5 GPUs each\).*gpu_a10g"):
        check_trials_fit(load_spec("paper"), config)
    check_trials_fit(load_spec("smoke"), config)   # a CPU study runs there


# ---------------------------------------------------------------- what --cluster runs


def _request(**kw) -> ClusterRequest:
    base = {"config": SHIPPED, "space": "paper", "storage_path": "s3://bucket/tlstudy"}
    return ClusterRequest(**{**base, **kw})


def test_plan_brings_the_cluster_up_then_submits_the_driver_job_on_the_head():
    config = load_cluster_config(SHIPPED)
    request = _request(study="fted", data="~/data/BCDR F03", data_format="bcdr", resume=True)
    steps = cluster.plan(request, config, ray="ray", submission_id="tlstudy-fted-1")
    up, run = steps[-2:]
    assert up.argv == ["ray", "up", "-y", "--no-restart", str(SHIPPED)]
    assert run.argv[:3] == ["ray", "exec", str(SHIPPED)]
    line = run.argv[3]
    assert line.startswith("cd ~/tlstudy && ray job submit --address http://127.0.0.1:8265 "
                           "--submission-id tlstudy-fted-1 --working-dir . ")
    # the head's shell expands ~/ and keeps every value one word
    bash = shutil.which("bash") or "/bin/bash"
    out = subprocess.run([bash, "-c", "printf '%s\\n' " + line.split(" -- ", 1)[1]],
                         capture_output=True, text=True, env={"HOME": "/home/u", "PATH": ""},
                         check=True).stdout.splitlines()
    assert out == ["python", "-m", "study.launch", "--on-head",
                   "--cluster", "/home/u/ray_bootstrap_config.yaml",
                   "--runs-dir", "/home/u/tlstudy-runs", "--space", "paper",
                   "--study", "fted", "--data", "/home/u/data/BCDR F03",
                   "--data-format", "bcdr", "--storage-path", "s3://bucket/tlstudy", "--resume"]
    excludes = json.loads(line.split("--runtime-env-json ", 1)[1].split(" -- ")[0].strip("'"))
    assert {".venv", ".git", "runs"} <= set(excludes["excludes"])


def test_space_file_must_be_shipped_with_the_project(tmp_path):
    spec = load_spec("smoke")
    assert cluster.space_argument("smoke", spec) == "smoke"
    inside = PROJECT_ROOT / "search_spaces" / "smoke.yaml"
    assert cluster.space_argument(str(inside), spec) == "search_spaces/smoke.yaml"
    outside = tmp_path / "mine.yaml"
    outside.write_text(inside.read_text())
    with pytest.raises(ClusterError, match="must be inside the project folder"):
        cluster.space_argument(str(outside), spec)


def test_dry_run_prints_every_command_and_runs_nothing(capsys):
    from study.launch import main

    rc = main(["--cluster", str(SHIPPED), "--space", "paper", "--storage-path",
               "s3://bucket/tlstudy", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "validated against Ray's schema" in out
    assert "ray up -y --no-restart" in out and "ray job submit" in out
    assert "ray attach" in out and f"-p {MLFLOW_PORT}" in out
    assert "dry run: nothing was started" in out


def test_cluster_without_shared_storage_is_refused(capsys):
    from study.launch import main

    assert main(["--cluster", str(SHIPPED), "--smoke-test"]) == 2
    assert "--cluster needs --storage-path" in capsys.readouterr().err


def test_missing_cloud_sdk_or_credentials_is_named_before_anything_runs(monkeypatch):
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ran: list = []
    with pytest.raises(ClusterError) as err:
        cluster.submit(_request(space="smoke"), load_spec("smoke"), echo=lambda _: None,
                       run=lambda *a, **k: ran.append(a))
    assert "cannot drive the cluster from this machine" in str(err.value)
    assert "pip install boto3" in str(err.value) or "no AWS credentials" in str(err.value)
    assert ran == []


def test_a_failed_step_stops_with_its_command_line(tmp_path, shipped, monkeypatch):
    login = tmp_path / "mlflow_credentials"
    cluster.make_login(login)                        # as on a machine that made it before
    monkeypatch.setattr(cluster, "HEAD_CREDENTIALS", str(login))
    token = tmp_path / "auth_token"
    token.write_text("made before\n")               # and the Ray token: `ray up` is step 1
    monkeypatch.setattr(cluster, "TOKEN_FILE", str(token))
    data = copy.deepcopy(shipped)
    data["provider"] = {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]}
    path = _write(tmp_path, data)
    ran: list[list[str]] = []

    def fails(argv, cwd):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 1)

    with pytest.raises(ClusterError, match=r"failed \(exit 1\): \S*ray up -y --no-restart"):
        cluster.submit(_request(config=path, space="smoke"), load_spec("smoke"),
                       echo=lambda _: None, run=fails)
    assert len(ran) == 1 and ran[0][1:] == ["up", "-y", "--no-restart", str(path)]


def test_on_head_the_driver_joins_the_running_ray_and_checks_what_can_be_reached(
        tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")     # what a Ray job's driver is given
    head = cluster.head_settings(SHIPPED, tmp_path, "http://10.0.0.5:5000")
    assert head.address == "10.0.0.5:6379"
    assert head.tracking_uri == "http://10.0.0.5:5000"
    assert head.resources == {"CPU": 32.0, "GPU": 4.0}      # 4 workers x (8 CPUs, 1 GPU)


# ---------------------------------------------------------------- two nodes, for real

TWO_NODES = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    a = json.loads(sys.argv[1])
    sys.path.insert(0, a["root"])
    # the job's `python` is this environment's, as the head's venv is on a real cluster
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    from study.cluster import PROJECT_ROOT, ClusterRequest, driver_argv, job_submit_argv
    from tests._ray_nodes import submit_job, two_nodes

    c, _ = two_nodes(a["worker_tmp"], head={
        "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": a["dashboard_port"]})
    print("cluster up", flush=True, file=sys.stderr)
    try:
        request = ClusterRequest(config=Path(a["config"]), space="smoke", study=a["study"],
                                 storage_path=a["storage"], tracking_uri=a["tracking_uri"])
        entry = driver_argv(request, cluster_config=a["config"], runs_dir=a["runs"])
        argv = job_submit_argv(entry, submission_id=a["study"], working_dir=str(PROJECT_ROOT),
                               address=f"http://127.0.0.1:{a['dashboard_port']}")
        def attempt():
            done = subprocess.run(argv, capture_output=True, text=True)
            return done.returncode, done.stdout + done.stderr

        rc, log = submit_job(attempt, session_dirs=[c.head_node.get_session_dir_path(),
                                                    a["worker_tmp"]])
        print(json.dumps({"nodes": [n.node_id for n in c.list_all_nodes()],
                          "rc": rc, "log": log}))
    finally:
        c.shutdown()
""")


def test_two_node_cluster_runs_the_smoke_study_as_a_ray_job(tmp_path, mlflow_server,
                                                            mlflow_client):
    """Two Ray nodes (1 CPU each) on this machine, the driver submitted with the same
    ``ray job submit`` line the head runs; its own process, so the session's Ray is untouched."""
    config = _write(tmp_path, {
        "cluster_name": "two-nodes", "max_workers": 1,
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.1"]},
        "auth": {"ssh_user": "nobody"}, "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "node_config": {}},
            "worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 1,
                       "max_workers": 1}}})
    load_cluster_config(config)                       # a valid launcher config too
    args = {"dashboard_port": quiet_port(), "config": str(config), "study": "smoke-2nodes",
            "storage": str(tmp_path / "shared"), "runs": str(tmp_path / "runs"),
            "tracking_uri": mlflow_server}
    report = run_cluster_script(TWO_NODES, args, tmp_path, timeout_s=480)
    assert report["rc"] == 0, report["log"][-8000:]
    assert "Table 1" in report["log"]
    nodes = set(report["nodes"])
    assert len(nodes) == 2

    exp = mlflow_client.get_experiment_by_name("smoke-2nodes")
    parents = mlflow_client.search_runs([exp.experiment_id],
                                        filter_string="tags.study = 'smoke-2nodes'")
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    runs = child_runs(mlflow_client, exp.experiment_id, parents[0].info.run_id)
    spec = load_spec("smoke")
    assert len(runs) == len(spec.variants) * (spec.search.trials + 1)   # search + evaluation
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    landed = {r.data.tags["node_id"] for r in runs}
    assert landed == nodes                            # trials ran on both nodes
    assert {r.data.tags["host"] for r in runs} == {socket.gethostname()}
    # Tune kept its state on the shared storage path, under the study's name
    assert (tmp_path / "shared" / "smoke-2nodes" / "study").is_dir()  # Tune's one run
