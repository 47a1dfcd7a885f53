"""``python -m study.launch --cluster ray_cluster.yaml``: a study on a Ray cluster.

From your machine (``submit``), each step printed before it runs:

1. the space file is validated (by the launcher) and the cluster YAML against Ray's own schema
   (``ray/autoscaler/ray-schema.json`` in the Ray wheel) and the study's needs: some node type
   can run a trial (the GPUs and CPUs ``resources`` asks for), the project is mounted, and a
   cluster with workers has ``--storage-path`` on shared storage;
2. preflight: the ``ray`` CLI, the cloud SDK (boto3 for AWS) and its credentials — each missing
   piece is named with how to get it, before anything is created;
3. ``ray get-auth-token --generate`` when the Ray token the YAML ships is missing;
4. ``ray up -y --no-restart CONFIG`` — creates the cluster, or attaches to the running one
   without restarting Ray (a study already running keeps running);
5. ``ray exec CONFIG "cd ~/tlstudy && ray job submit ..."`` — on the head, the study driver is
   submitted as a Ray job: working_dir = the project copy ``ray up`` synced (Ray ships it to
   every node), entrypoint ``python -m study.launch --on-head --cluster
   ~/ray_bootstrap_config.yaml ...``. ``ray job submit`` streams the driver's output; Ctrl-C
   here detaches, the job goes on.

On the head (``--on-head``, ``head_settings``): the driver connects to the running Ray, uses
(or starts) the head's MLflow server on port 5000 and gives trials its address on the cluster
network, checks the space against what the autoscaler can reach (GPU workers are started on
demand, so none may be up yet), and runs the study with Tune's ``storage_path`` on the shared
storage. ``--dry-run`` prints steps 3-5 without running them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_spaces import SpecError, StudySpec, check_resources

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEAD_CONFIG = "~/ray_bootstrap_config.yaml"   # where Ray's launcher puts the config on the head
HEAD_RUNS_DIR = "~/tlstudy-runs"              # the head's --runs-dir: MLflow store, data, Optuna
HEAD_JOB_ADDRESS = "http://127.0.0.1:8265"    # the job server, as seen on the head
MLFLOW_PORT = 5000                            # the head's MLflow server (head_start_ray_commands)
TOKEN_FILE = "~/.ray/auth_token"
# the MLflow login (one line user:password, mode 0600): made on your machine by `python -m
# study.cluster login` (the launcher does it when missing), shipped by file_mounts, read by the
# head's MLflow server and by the study driver (TLSTUDY_MLFLOW_CREDENTIALS); trials get it
# from the driver through Ray (study.tracking._login), never through argv, env printed or logs
HEAD_CREDENTIALS = "~/.tlstudy/mlflow_credentials"
LOGIN_USER = "tlstudy"
JOB_EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", "*.egg-info", ".pytest_cache",
                ".ruff_cache", ".mypy_cache", ".hypothesis"]
_SDKS = {"aws": ("boto3", "pip install boto3"),
         "gcp": ("googleapiclient", "pip install google-api-python-client"),
         "azure": ("azure.mgmt.compute", "pip install azure-cli azure-mgmt-compute")}
_HOME_PATH = re.compile(r"~/[\w./-]*")


class ClusterError(RuntimeError):
    """The cluster cannot be used as configured; the message says what to fix."""


@dataclass(frozen=True)
class ClusterConfig:
    """A Ray cluster-launcher config, read once (``load_cluster_config``)."""

    path: Path
    data: dict[str, Any]

    @property
    def provider(self) -> str:
        return str(self.data["provider"]["type"])

    def node_resources(self) -> dict[str, dict[str, float]]:
        """Each node type's declared resources (``{}`` where Ray detects them itself)."""
        types = self.data.get("available_node_types") or {}
        return {name: {k: float(v) for k, v in (t.get("resources") or {}).items()}
                for name, t in types.items()}

    def max_count(self, node_type: str) -> int:
        if node_type == self.data.get("head_node_type"):
            return 1
        t = self.data["available_node_types"][node_type]
        return int(t.get("max_workers", self.data.get("max_workers", 0)))

    @property
    def has_workers(self) -> bool:
        return any(self.max_count(n) > 0 for n in self.node_resources()
                   if n != self.data.get("head_node_type"))

    def reachable_resources(self) -> dict[str, float]:
        """What the autoscaler can bring up, all nodes together: the totals to check a study
        against before its GPU workers exist."""
        total: dict[str, float] = {}
        for name, res in self.node_resources().items():
            for key, value in res.items():
                total[key] = total.get(key, 0.0) + value * self.max_count(name)
        return total

    def reachable_nodes(self) -> list[dict[str, float]]:
        """Each node the autoscaler can bring up (a node type repeated ``max_workers`` times),
        with its declared resources: what the study's trial limit is sized from."""
        return [dict(res) for name, res in self.node_resources().items()
                for _ in range(self.max_count(name))]

    def project_mount(self) -> str:
        """The head's copy of this project: the ``file_mounts`` target whose source is the
        project folder (``~/tlstudy: .``)."""
        for remote, local in (self.data.get("file_mounts") or {}).items():
            # Ray resolves relative sources against its cwd: the launcher runs it in the project
            if (PROJECT_ROOT / Path(str(local)).expanduser()).resolve() == PROJECT_ROOT:
                if not _HOME_PATH.fullmatch(str(remote)) and not str(remote).startswith("/"):
                    break
                return str(remote)
        raise ClusterError(f"{self.path}: file_mounts: mount this project on the nodes, e.g. "
                           "`~/tlstudy: .` (the study job runs from that copy)")

    def ships_token(self) -> bool:
        return any(str(local) == TOKEN_FILE
                   for local in (self.data.get("file_mounts") or {}).values())

    def ships_login(self) -> bool:
        return any(str(local) == HEAD_CREDENTIALS
                   for local in (self.data.get("file_mounts") or {}).values())


def ray_schema() -> dict[str, Any]:
    """Ray's own JSON schema for cluster-launcher configs (shipped in the Ray wheel)."""
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def load_cluster_config(path: Path, *, validate: bool = True) -> ClusterConfig:
    """Read a cluster YAML; with ``validate``, check it against Ray's schema.

    Raises:
        ClusterError: unreadable, not YAML, or schema errors (each with its key path).
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ClusterError(f"{path}: expected a mapping of cluster settings")
    if validate:
        import jsonschema

        validator = jsonschema.Draft7Validator(ray_schema())
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
        if errors:
            lines = [f"{path}: {_key(e.absolute_path) or '(top level)'}: {e.message}"
                     for e in errors]
            raise ClusterError("\n".join(lines) + "\n(checked against Ray's cluster schema, "
                               "ray/autoscaler/ray-schema.json)")
        head = data.get("head_node_type")
        if head is not None and head not in (data.get("available_node_types") or {}):
            raise ClusterError(f"{path}: head_node_type: {head!r} is not one of "
                               "available_node_types")
    return ClusterConfig(Path(path), data)


def _key(path: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def check_trials_fit(spec: StudySpec, config: ClusterConfig) -> str:
    """The first node type that can run one of the study's trials (its CPUs and GPUs).

    Node types without declared resources (Ray detects them from the instance type) count as
    fitting. Raises ClusterError naming both files when no type fits."""
    reasons = []
    for name, res in config.node_resources().items():
        if config.max_count(name) <= 0:
            continue
        if not res:
            return name
        try:
            check_resources(spec, res)
            return name
        except SpecError as exc:
            reasons.append(f"{name} ({_fmt(res)}): {exc.reason}")
    raise ClusterError(f"{spec.source}: resources: no node type of {config.path} can run a "
                       f"trial ({spec.resources.cpus:g} CPUs, {spec.resources.gpus:g} GPUs "
                       "each): " + "; ".join(reasons))


def _fmt(res: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in res.items())


# ---------------------------------------------------------------- from your machine


@dataclass(frozen=True)
class ClusterRequest:
    """What ``python -m study.launch --cluster`` was asked (the launcher's arguments)."""

    config: Path
    space: str                      # a shipped name or a path inside the project
    study: str | None = None
    data: str | None = None         # a path on the head
    data_format: str | None = None
    storage_path: str | None = None
    tracking_uri: str | None = None
    resume: bool = False
    dry_run: bool = False
    max_concurrent_trials: int | None = None


@dataclass(frozen=True)
class Step:
    what: str
    argv: list[str]


def preflight(config: ClusterConfig, *, which: Callable[[str], str | None] = shutil.which
              ) -> list[str]:
    """What is missing on this machine to drive the cluster (empty: nothing)."""
    problems = []
    if _ray_cli(which) is None:
        problems.append("the `ray` command is not installed: pip install \"ray[default]==2.60.*\"")
    sdk = _SDKS.get(config.provider)
    if sdk is not None and importlib.util.find_spec(sdk[0].split(".")[0]) is None:
        problems.append(f"Ray's {config.provider} provider needs {sdk[0]}: {sdk[1]}")
    elif config.provider == "aws":
        import boto3

        if boto3.Session().get_credentials() is None:
            problems.append("no AWS credentials found: run `aws configure`, or set AWS_PROFILE "
                            "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    return problems


def _ray_cli(which: Callable[[str], str | None]) -> str | None:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.is_file() else which("ray")


def driver_argv(request: ClusterRequest, *, cluster_config: str = HEAD_CONFIG,
                runs_dir: str = HEAD_RUNS_DIR) -> list[str]:
    """The study driver's command line as the job runs it on the head."""
    argv = ["python", "-m", "study.launch", "--on-head", "--cluster", cluster_config,
            "--runs-dir", runs_dir, "--space", request.space]
    for flag, value in (("--study", request.study), ("--data", request.data),
                        ("--data-format", request.data_format),
                        ("--storage-path", request.storage_path),
                        ("--tracking-uri", request.tracking_uri)):
        if value is not None:
            argv += [flag, value]
    if request.max_concurrent_trials is not None:
        argv += ["--max-concurrent-trials", str(request.max_concurrent_trials)]
    if request.resume:
        argv.append("--resume")
    return argv


def job_submit_argv(entrypoint: Sequence[str], *, submission_id: str | None,
                    working_dir: str = ".", address: str = HEAD_JOB_ADDRESS,
                    ray: str = "ray") -> list[str]:
    """``ray job submit`` of ``entrypoint`` with the project as the job's working_dir
    (``submission_id`` None: Ray names the job, so the same line can be run again)."""
    runtime_env = json.dumps({"excludes": JOB_EXCLUDES}, separators=(",", ":"))
    sid = [] if submission_id is None else ["--submission-id", submission_id]
    return [ray, "job", "submit", "--address", address, *sid, "--working-dir", working_dir,
            "--runtime-env-json", runtime_env, "--", *entrypoint]


def head_shell(project: str, submit: Sequence[str]) -> str:
    """The shell line run on the head: every argument quoted, but a leading ``~/`` left for the
    head's shell to expand (``~/'data/BCDR F03'``)."""
    return f"cd {_sh(project)} && " + " ".join(_sh(a) for a in submit)


def _sh(arg: str) -> str:
    if arg.startswith("~/"):          # the tilde stays unquoted so that the head expands it
        return "~/" + shlex.quote(arg[2:]) if arg[2:] else "~/"
    return shlex.quote(arg)


def plan(request: ClusterRequest, config: ClusterConfig, *, ray: str = "ray",
         submission_id: str) -> list[Step]:
    """The commands ``submit`` runs, in order."""
    steps = []
    if config.ships_token() and not Path(TOKEN_FILE).expanduser().is_file():
        steps.append(Step("create the cluster's Ray token (file_mounts ships it to every node)",
                          [ray, "get-auth-token", "--generate"]))
    if config.ships_login() and not Path(HEAD_CREDENTIALS).expanduser().is_file():
        steps.append(Step("create the cluster's MLflow login (file_mounts ships it, mode 0600)",
                          [sys.executable, "-m", "study.cluster", "login"]))
    cfg = str(config.path.resolve())   # the commands run in the project folder
    steps.append(Step("create the cluster, or attach to it (Ray is not restarted)",
                      [ray, "up", "-y", "--no-restart", cfg]))
    submit = job_submit_argv(driver_argv(request), submission_id=submission_id)
    steps.append(Step(f"run the study driver on the head as Ray job {submission_id}",
                      [ray, "exec", cfg, head_shell(config.project_mount(), submit)]))
    return steps


def space_argument(space: str, spec: StudySpec) -> str:
    """The ``--space`` value the head understands: a shipped name, or the file's path relative
    to the project (the job's working directory is the head's copy of the project)."""
    path = Path(space).expanduser()
    if not path.exists():
        return space                         # a shipped name (load_spec accepted it)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        raise ClusterError(f"{spec.source}: the space file must be inside the project folder "
                           f"{PROJECT_ROOT} so that it is shipped to the cluster") from None


def submit(request: ClusterRequest, spec: StudySpec, *, echo: Callable[[str], Any] = print,
           run: Callable[..., Any] = subprocess.run) -> int:
    """Validate, bring the cluster up (or attach) and run the study on it as a Ray job.

    Returns the exit status of the job submission (0: the study finished). Raises
    ClusterError for anything to fix before the cluster is touched, or a failed step."""
    config = load_cluster_config(request.config)
    node_type = check_trials_fit(spec, config)
    config.project_mount()
    if config.has_workers and not request.storage_path:
        raise ClusterError(
            "--cluster needs --storage-path on storage every node reaches (s3://bucket/prefix, "
            "gs://..., or an NFS mount such as /mnt/nfs/tlstudy): trials on the GPU workers "
            "write their checkpoints there; a folder on the head is invisible to them")
    echo(f"cluster: {config.path} validated against Ray's schema ({config.provider}; trials "
         f"of {spec.name} fit on node type {node_type!r}; can reach "
         f"{_fmt(config.reachable_resources())})")
    problems = preflight(config)
    if problems and not request.dry_run:
        raise ClusterError("cannot drive the cluster from this machine:\n  - "
                           + "\n  - ".join(problems))
    sid = f"tlstudy-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    steps = plan(request, config, ray=_ray_cli(shutil.which) or "ray", submission_id=sid)
    for i, step in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {step.what}:\n    {shlex.join(step.argv)}")
    cfg = shlex.quote(str(config.path))
    echo(f"follow: ray exec {cfg} 'ray job logs --follow {sid}'   "
         f"stop: ray exec {cfg} 'ray job stop {sid}'\n"
         f"MLflow UI: ray attach {cfg} -p {MLFLOW_PORT}, then http://localhost:{MLFLOW_PORT} "
         f"(user {LOGIN_USER}, password in {HEAD_CREDENTIALS})   "
         f"Ray dashboard: ray dashboard {cfg}, then http://localhost:8265")
    if request.dry_run:
        for p in problems:
            echo(f"note: {p}")
        echo("dry run: nothing was started")
        return 0
    for i, step in enumerate(steps, 1):
        try:
            done = run(step.argv, cwd=PROJECT_ROOT)
        except OSError as exc:
            raise ClusterError(f"step {i} ({step.what}) could not start: {exc}") from None
        if done.returncode != 0:
            if step is steps[-1]:   # the study's own exit status; its output (shown) says why
                echo(f"the study job {sid} failed (exit {done.returncode}); its whole log: "
                     f"ray exec {cfg} 'ray job logs {sid}'")
                return int(done.returncode)
            raise ClusterError(f"step {i} failed (exit {done.returncode}): "
                               f"{shlex.join(step.argv)}\n(see its output above: `ray up` "
                               "shows the setup or start command that failed with its output; "
                               "before any node exists, it is the cloud: credentials, instance "
                               "quotas for the GPU type, region)")
    return 0


# ---------------------------------------------------------------- on the head


@dataclass(frozen=True)
class HeadSettings:
    """How the driver job on the head runs the study."""

    address: str                    # the running Ray (the job's RAY_ADDRESS)
    tracking_uri: str               # MLflow as the trials on the workers reach it
    resources: dict[str, float]     # what the autoscaler can reach, for the study's checks


def head_settings(config_path: Path, runs_dir: Path, tracking_uri: str | None, *,
                  echo: Callable[[str], Any] = print) -> HeadSettings:
    """Settings for ``--on-head``: Ray already runs; MLflow is the head's server on
    ``MLFLOW_PORT`` (reused, or started here) unless ``tracking_uri`` names another."""
    config = load_cluster_config(Path(config_path).expanduser(), validate=False)
    address = os.environ.get("RAY_ADDRESS") or "auto"
    if tracking_uri is None:
        from ray.util import get_node_ip_address

        from study.server import ServerError, ensure_server, server_status

        # the server the YAML's head_start_ray_commands started, whatever its port; else one
        # on MLFLOW_PORT (where `ray attach CONFIG -p 5000` expects it)
        running = server_status(runs_dir).state == "running"
        try:
            info = ensure_server(runs_dir, host="0.0.0.0", port=None if running else MLFLOW_PORT,
                                 timeout_s=120)
        except (ServerError, ValueError) as exc:
            raise ClusterError(f"the head's MLflow server (runs folder {runs_dir}) is not "
                               f"running and could not be started: {exc}\nThe cluster YAML "
                               f"ships the login as {HEAD_CREDENTIALS} (file_mounts; "
                               "`python -m study.cluster login` makes it)") from None
        if _is_loopback(info.host):
            raise ClusterError(f"the head's MLflow server ({info.url}) binds {info.host}: the "
                               f"workers cannot reach it. Stop it (python -m study.server stop "
                               f"--study-dir {runs_dir}) and submit again")
        tracking_uri = f"http://{get_node_ip_address()}:{info.port}"
        echo(f"MLflow on the head: {tracking_uri} (from your machine: ray attach CONFIG -p "
             f"{info.port}, then http://localhost:{info.port})")
    return HeadSettings(address, tracking_uri, config.reachable_resources())


def use_head_login(environ: dict[str, str] | None = None) -> None:
    """On the head: read the MLflow login from ``HEAD_CREDENTIALS`` (what the YAML ships) when
    no other login is configured (``TLSTUDY_MLFLOW_CREDENTIALS``, MLflow's variables)."""
    from study.server import CREDENTIALS_FILE_ENV

    env = os.environ if environ is None else environ
    path = Path(HEAD_CREDENTIALS).expanduser()
    if (path.is_file() and not env.get(CREDENTIALS_FILE_ENV)
            and not env.get("MLFLOW_TRACKING_PASSWORD")):
        env[CREDENTIALS_FILE_ENV] = str(path)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# ---------------------------------------------------------------- the MLflow login


def make_login(path: Path, *, user: str = LOGIN_USER) -> bool:
    """Write a new random MLflow login (``user:password``, 32 characters) to ``path`` with mode
    0600 unless the file exists; True when written. The password is never printed."""
    import secrets

    path = Path(path).expanduser()
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{user}:{secrets.token_urlsafe(24)}\n")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m study.cluster login [--file F]``: the cluster's MLflow login (kept if it
    exists). The cluster YAML ships it to the nodes; the head's server and the driver read it;
    open the MLflow UI with that user and password."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m study.cluster", description=main.__doc__)
    p.add_argument("command", choices=["login"])
    p.add_argument("--file", type=Path, default=Path(HEAD_CREDENTIALS),
                   help=f"where (default {HEAD_CREDENTIALS})")
    args = p.parse_args(argv)
    path = args.file.expanduser()
    if make_login(path):
        print(f"MLflow login for the cluster written to {path} (mode 0600; user {LOGIN_USER})")
    else:
        print(f"MLflow login kept: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
