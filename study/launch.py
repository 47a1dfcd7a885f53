"""``python -m study.launch``: run a transfer-learning study end to end.

With no arguments it runs the embedded default (``search_spaces/quick.yaml``): it writes the
synthetic BCDR-F03-layout dataset if absent, starts (or reuses) a local MLflow server, searches
each variant × split with Optuna + ASHA on a local Ray, evaluates each split's best
configuration once on its test set, and prints Table 1 and the MLflow URL.

Examples::

    python -m study.launch                                   # the default study (quick.yaml)
    python -m study.launch --smoke-test                      # smoke.yaml, about two minutes
    python -m study.launch --space paper --data /data/BCDR-F03_dataset --data-format bcdr
    python -m study.launch --tracking-uri http://mlflow.internal:5000 --study fted-ablation
    python -m study.launch --resume                          # continue an interrupted study
    python -m study.launch --cluster ray_cluster.yaml --space paper \
        --data /data/BCDR-F03_dataset --data-format bcdr --storage-path s3://bucket/tlstudy
    python -m study.launch --address 10.0.0.5:6379 --space paper \
        --storage-path /mnt/nfs/tlstudy --max-concurrent-trials 16   # a running Ray cluster
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m study.launch \
        --space paper --runs-dir /srv/tlstudy-runs    # the same, as a Ray job on its head

Before any MLflow server or Ray process starts, the launcher checks the space file, the
pretrained weights of every variant that loads them, and the data (path, layout, ROIs).

Exit status: 0 done (or already done), 1 the study failed (a declared variant was never
evaluated: its parent run is FAILED naming it) or the environment failed (the MLflow server did
not start, no space left on the runs folder's disk), 2 bad input (space file, weights, data,
another version of the study under this name, a ``ray://`` address), 3 the study is being
run by another process (launcher or ``study.schedule``; one execution at a time), 130
interrupted.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

from search_spaces import SpecError, load_spec
from trainables.datasets import FORMATS
from trainables.records import DatasetError

#: The study's space, recorded in its folder (``record_space``).
SPACE_RECORD = "space.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=None,
                   help="study file (YAML) or a shipped name: quick (default), smoke, paper")
    p.add_argument("--smoke-test", action="store_true",
                   help="run search_spaces/smoke.yaml (what CI runs); overrides --space")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset folder to use instead of the space file's (with --data-format)")
    p.add_argument("--data-format", choices=FORMATS, default=None,
                   help="layout of --data: bcdr, mias or manifest")
    p.add_argument("--study", default=None,
                   help="study name (MLflow experiment and folder); default: the file's name")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking server; default $MLFLOW_TRACKING_URI, else a managed "
                        "server on 127.0.0.1 (its stores under --runs-dir/mlflow)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where studies, data, caches and the managed MLflow server live "
                        "(default ./runs; with --cluster it is ~/tlstudy-runs on the head, "
                        "set in the cluster YAML)")
    p.add_argument("--backend-store-uri", default=None,
                   help="the managed MLflow server's store: sqlite (default on one machine), "
                        "postgres (the runs folder's own PostgreSQL, also Optuna's) or a "
                        "SQLAlchemy URI")
    p.add_argument("--artifacts-destination", default=None,
                   help="the managed server's artifact store: a (shared) folder, s3://, gs://")
    p.add_argument("--server-workers", type=int, default=None,
                   help="the managed server's worker processes (default: one per 16 "
                        "concurrent trials)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted study of this name (same parent run)")
    p.add_argument("--cluster", type=Path, default=None,
                   help="Ray cluster-launcher config (ray_cluster.yaml): bring the cluster up "
                        "(or attach) and run the study on it as a Ray job, e.g. --cluster "
                        "ray_cluster.yaml --space paper --storage-path s3://bucket/tlstudy")
    p.add_argument("--storage-path", default=None,
                   help="Tune's checkpoints and experiment state (default RUNS_DIR/STUDY/ray); "
                        "with --cluster, storage every node reaches: s3://bucket/prefix, an NFS "
                        "mount")
    p.add_argument("--address", default=None,
                   help="run the study on a running Ray cluster, this machine being one of "
                        "its nodes: HOST:PORT (the head's GCS port, 6379) or auto (the "
                        "cluster `ray start` runs here); default $RAY_ADDRESS, else a local "
                        "Ray. ray://HOST:PORT (Ray Client) is refused: Tune would run the "
                        "study's driver loop on the head; the error prints the `ray job "
                        "submit` line (and the --address HOST:PORT one) to run instead")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at once at most, when the cluster can grow beyond what is up "
                        "now (e.g. an autoscaling KubeRay cluster); default: what fits now")
    p.add_argument("--dry-run", action="store_true",
                   help="with --cluster: validate and print the cluster commands, run nothing")
    p.add_argument("--on-head", action="store_true",
                   help="internal: the driver job on the cluster's head (--cluster submits it)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Optuna's, MLflow's and Ray's own messages (quiet by default)")
    args = p.parse_args(argv)
    if (args.data is None) != (args.data_format is None):
        p.error("--data and --data-format go together")
    if (args.on_head or args.dry_run) and args.cluster is None:
        p.error("--on-head and --dry-run go with --cluster")
    if args.cluster is not None and not args.on_head:
        if args.address is not None:
            p.error("--address attaches to a running Ray cluster, --cluster brings one up "
                    "from its YAML: use one of them")
        if args.runs_dir is not None:
            p.error("--runs-dir does not apply with --cluster: results live on the head in "
                    "~/tlstudy-runs (the head's MLflow server is started there by the cluster "
                    "YAML's head_start_ray_commands); copy them with `ray rsync-down CONFIG "
                    "~/tlstudy-runs ./runs-cluster`")
    if args.max_concurrent_trials is not None and args.max_concurrent_trials < 1:
        p.error(f"--max-concurrent-trials must be 1 or more, not {args.max_concurrent_trials}")
    if args.runs_dir is None:
        args.runs_dir = Path("runs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = "smoke" if args.smoke_test else (args.space or "quick")
    shown = space if args.smoke_test or args.space or not args.study else args.study
    print(f"study.launch: checking {shown} (space file, weights, data) ...", flush=True)
    quiet_third_parties(args.verbose)
    spec = _load_space(args, space)
    if spec is None:
        return 2
    if args.cluster is not None and not args.on_head:
        return _on_cluster(args, spec, space)
    address = None if args.on_head else _attach_address(args)
    if address == "error":
        return 2
    from study.cluster._client import is_ray_client

    if is_ray_client(address):
        return _refuse_ray_client(args, spec, address)
    from study._preflight import PreflightError, check_weights

    try:  # before anything is written or started
        weights = check_weights(spec)
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _say_weights(spec, weights)
    runs = args.runs_dir.expanduser().resolve()
    from study.scheduling._lock import StudyLock, StudyLocked

    try:  # one execution of a study at a time (launcher or scheduler), held to the end
        lock = StudyLock(runs / spec.name).acquire()
    except StudyLocked as exc:
        print(f"error: {spec.name}: {exc}. Wait for it to end, or stop it (Ctrl-C, or kill "
              "that pid) and continue it with --resume.", file=sys.stderr)
        return 3
    except OSError as exc:  # a runs folder that cannot be written
        print(f"error: cannot write the study's lock under {runs / spec.name}: {exc}",
              file=sys.stderr)
        return 1
    try:
        return _run_here(args, spec, runs, address)
    finally:
        lock.release()


def quiet_third_parties(verbose: bool) -> None:
    """Optuna's, MLflow's and Ray's chatter off (``-v`` keeps it): no "A new study created"
    per search, no "View run" links per run, no Ray advice on its authentication; Ray's token
    authentication stays as Ray sets it. Set in the environment too, so Ray workers inherit it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress line, not Tune's tables
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if verbose:
        return
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Ray and Optuna reset their root loggers' levels when imported: quiet their children,
    # whose levels they leave alone (e.g. Ray's "Set RAY_AUTH_MODE=disabled to opt out" and
    # Optuna's "A new study created in RDB" per search).
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in SILENT_LOGGERS:  # a failed trial: counted on the status line, named in MLflow
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


#: Loggers silenced below ERROR unless ``-v``; the second group entirely (Tune logs every
#: failed trial's traceback as an error; the study shows it as "failed" on its status line and
#: as the trial run's ``failure_reason`` in MLflow).
SILENT_LOGGERS = ("ray.tune", "ray.train", "ray.air")
QUIET_LOGGERS = ("ray._private", "ray.util", "ray.data",
                 "optuna.storages", "optuna.study", "optuna.samplers", "optuna.integration",
                 "optuna_integration", "mlflow", "alembic", "urllib3")


def _load_space(args: argparse.Namespace, space: str):  # type: ignore[no-untyped-def]
    """The validated study of ``--space`` / ``--data`` / ``--study``, or None (said why)."""
    from search_spaces import SHIPPED

    recorded = args.runs_dir.expanduser().resolve() / (args.study or "") / SPACE_RECORD
    if args.space is None and not args.smoke_test and args.study and recorded.is_file():
        return _recorded_space(recorded, args)
    if not Path(space).expanduser().exists() and space not in SHIPPED:
        print(f"error: no space file {space!r}; shipped spaces: {', '.join(SHIPPED)} "
              "(--space NAME), or the path of a YAML study file", file=sys.stderr)
        return None
    from trainables.backbones import available_backbones

    try:
        spec = load_spec(space, known_backbones=available_backbones())
        if args.data is not None:
            spec = spec.with_dataset(args.data, args.data_format)
        if args.study:
            spec = spec.with_name(args.study)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return spec


def _recorded_space(path: Path, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The space recorded with study ``--study`` (``record_space``), with ``--data`` applied."""
    import json

    from search_spaces import spec_from_dict
    from trainables.backbones import available_backbones

    try:
        spec = spec_from_dict(json.loads(path.read_text()), source=str(path),
                              known_backbones=available_backbones())
        if args.data is not None:
            spec = spec.with_dataset(args.data, args.data_format)
        return spec.with_name(args.study)
    except (SpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _say_weights(spec, weights) -> None:  # type: ignore[no-untyped-def]
    if weights is not None:
        print(f"weights: {weights.path} (for {', '.join(weights.variants)})")
    elif not spec.pretrained:
        print(f"weights: none (pretrained: false) — {', '.join(spec.variants)} start from "
              "random initialisation")


def preflight(spec, runs: Path):  # type: ignore[no-untyped-def]
    """The data, checked before a server or Ray starts (the weights were checked before the
    study's lock): written if synthetic, loaded, ROIs cut and cached, split. Returns the
    prepared ``StudyData``; raises ``DatasetError`` (the message names file, row, field)."""
    from study.phases._data import prepare_data

    return prepare_data(spec, runs)


def hint_options(args: argparse.Namespace, runs: Path) -> str:
    """The options a pasted follow-up command needs to find this study: ``--runs-dir`` and
    ``--tracking-uri`` as the user gave them (the defaults left out)."""
    out = ""
    if runs != Path("runs").resolve():
        out += f" --runs-dir {shlex.quote(str(runs))}"
    if args.tracking_uri:
        out += f" --tracking-uri {shlex.quote(args.tracking_uri)}"
    return out


def record_space(spec, study_dir: Path) -> Path:  # type: ignore[no-untyped-def]
    """The study's space, stored with it (``<runs>/<study>/space.json``, the data's path
    included: it stays on this machine), so that ``study.schedule run --study NAME`` and
    ``study.launch --resume --study NAME`` find it by the study's name."""
    import json

    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / SPACE_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec.to_dict(), indent=1, default=str))
    tmp.replace(path)
    return path


def _run_here(args: argparse.Namespace, spec, runs: Path,  # type: ignore[no-untyped-def]
              address: str | None) -> int:
    """Run (or continue) the study with this process as the driver; the study lock is held.
    ``address``: the Ray cluster to attach to (``_attach_address``), None for a local Ray."""
    try:
        data = preflight(spec, runs)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not out_of_space(exc):
            raise
        return _no_space(exc, runs)
    hints = hint_options(args, runs)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    from study.server import ServerError
    from study.tracking._login import driver_login

    if args.on_head:
        from study.cluster import use_head_login

        use_head_login()  # the login the cluster YAML ships to the head
    try:  # MLflow's client reads the variables, not TLSTUDY_MLFLOW_CREDENTIALS: set them here
        login = driver_login()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if login is not None:
        login.apply()
    on_cluster: dict = {}
    if address is not None:
        from study.cluster import ClusterError
        from study.cluster._attach import attach

        try:
            found = attach(address, runs, uri, storage_path=args.storage_path,
                           server_options={"backend": args.backend_store_uri,
                                           "artifacts": args.artifacts_destination,
                                           "workers": args.server_workers})
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        uri = found.tracking_uri
        on_cluster = {"address": found.address, "resources": found.resources}
    if args.on_head:
        from study.cluster import ClusterError, head_settings

        try:
            head = head_settings(args.cluster, runs, uri)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        uri = head.tracking_uri
        on_cluster = {"address": head.address, "resources": head.resources}
    if uri is None:
        from study.server import ServerError, capacity_warning, ensure_server, workers_for

        concurrency = expected_concurrency(spec, on_cluster.get("resources"))
        print("MLflow: starting the study's server (10-20 s) ...", flush=True)
        try:
            info = ensure_server(runs, backend=args.backend_store_uri,
                                 artifacts=args.artifacts_destination,
                                 workers=args.server_workers,
                                 default_workers=workers_for(concurrency))
        except (ServerError, ValueError) as exc:
            print(f"error: the MLflow server did not start: {exc}", file=sys.stderr)
            return 1
        uri = info.url
        warning = capacity_warning(info, concurrency)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"MLflow UI: {uri}  (stop it with: python -m study.server stop "
              f"--runs-dir {shlex.quote(str(runs))})")
    from study.phases._run import TrialsFailed
    from study.run import StudyIncomplete, run_study

    if not args.resume:
        verdict = _previous_execution(spec, runs / spec.name, uri, hints)
        if verdict == "done":
            return 0
        if verdict == "conflict":
            return 2
        args.resume = verdict == "resume"
    record_space(spec, runs / spec.name)
    try:
        run_study(spec, runs / spec.name, uri, resume=args.resume, data=data,
                  storage_path=args.storage_path,
                  max_concurrent_trials=args.max_concurrent_trials, **on_cluster)
    except (DatasetError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StudyIncomplete as exc:
        print(f"error: study {spec.name!r} FAILED: {exc}. MLflow: {uri}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: runs ended as KILLED; continue with: python -m study.launch "
              f"--resume --study {spec.name}{hints}", file=sys.stderr)
        return 130
    except TrialsFailed as exc:
        print(f"error: the study failed: {exc}\n(each trial's full error: Tune's error.txt "
              "under the storage path; fix the cause and continue with --resume)",
              file=sys.stderr)
        return 1
    except Exception as exc:
        if not out_of_space(exc):
            raise
        return _no_space(exc, runs)
    print(f"MLflow UI: {uri}")
    print(f"rebuild the report: python -m dashboards.report --study {spec.name}{hints}")
    return 0


def expected_concurrency(spec, resources=None) -> int:  # type: ignore[no-untyped-def]
    """Trials the study can run at once: ``resources`` (a cluster's, {"CPU": n, "GPU": m}) or
    this machine's cores and GPUs, divided by what one trial reserves."""
    from study.phases._slots import trial_slots

    if resources is None:
        import torch

        resources = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
    return trial_slots(spec, [resources])


def _attach_address(args: argparse.Namespace) -> str | None:
    """``--address``, else ``RAY_ADDRESS``, checked (``"error"``: refused, message printed)."""
    from study.cluster import ClusterError
    from study.cluster._attach import resolve_address

    try:
        return resolve_address(args.address, os.environ)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return "error"


def _refuse_ray_client(args: argparse.Namespace, spec,  # type: ignore[no-untyped-def]
                       address: str) -> int:
    """``ray://``: refused before anything starts, with the commands that run this study on
    that cluster instead (:mod:`study.cluster._client` says why)."""
    from study.cluster import ClusterError
    from study.cluster._client import cluster_endpoints, refusal

    try:
        options = forwarded_options(args, spec)
    except ClusterError as exc:  # a space file the cluster would not get
        print(f"error: {address} is Ray Client, which cannot run a study (see --address in "
              f"--help); and to run it on the cluster instead: {exc}", file=sys.stderr)
        return 2
    source = "--address" if args.address is not None else "RAY_ADDRESS"
    print(f"error: {refusal(address, source, cluster_endpoints(address), options)}",
          file=sys.stderr)
    return 2


def forwarded_options(args: argparse.Namespace,  # type: ignore[no-untyped-def]
                      spec) -> list[str]:
    """The options that run this same study from another machine's shell (a Ray job on the
    head, a machine of the cluster): ``--address`` left out; ``--runs-dir`` as given (a
    relative one made absolute), else the head's ``~/tlstudy-runs`` (the launcher expands
    ``~`` itself: the job's working copy of the project, where ``./runs`` would be, is
    deleted when the job ends); a space file as a path inside the project folder."""
    from study.cluster import HEAD_RUNS_DIR, space_argument

    out = ["--smoke-test"] if args.smoke_test else []
    if not args.smoke_test:  # the space this launch resolved (a recorded one included)
        out += ["--space", space_argument(args.space or _space_option(spec), spec)]
    runs = str(args.runs_dir)
    if args.runs_dir == Path("runs"):          # the default: not given
        runs = HEAD_RUNS_DIR
    elif not runs.startswith("~") and not args.runs_dir.is_absolute():
        runs = str(args.runs_dir.resolve())
    for flag, value in (("--data", args.data), ("--data-format", args.data_format),
                        ("--study", args.study), ("--runs-dir", runs),
                        ("--tracking-uri", args.tracking_uri),
                        ("--backend-store-uri", args.backend_store_uri),
                        ("--artifacts-destination", args.artifacts_destination),
                        ("--server-workers", args.server_workers),
                        ("--storage-path", args.storage_path),
                        ("--max-concurrent-trials", args.max_concurrent_trials)):
        if value is not None:
            out += [flag, str(value)]
    return out + ["--resume"] * args.resume + ["-v"] * args.verbose


def _space_option(spec) -> str:  # type: ignore[no-untyped-def]
    """``--space`` for a hint: a shipped name as is, a file as an absolute path."""
    path = Path(spec.source)
    return str(path.resolve()) if path.is_file() else path.stem


def _no_space(exc: BaseException, runs: Path) -> int:
    print(f"error: no space left on the device holding {runs} ({exc}). Free some space "
          "and run the same command again: the study continues where it stopped.",
          file=sys.stderr)
    return 1


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: ``ENOSPC`` from the kernel, or
    SQLite's / pyarrow's / Ray's rewording of it."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        text = str(e)
        if "No space left on device" in text or "database or disk is full" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _previous_execution(spec, study_dir: Path, uri: str, hints: str = "") -> str:
    """What a launch without ``--resume`` does when the study folder holds an execution:
    ``"new"`` (none), ``"done"`` (it FINISHED with this space: say so, run nothing),
    ``"resume"`` (it was interrupted: continue it) or ``"conflict"`` (another space)."""
    import json

    from study import tracking
    from study.run import STATE_FILE

    state = study_dir / STATE_FILE
    if not state.is_file():
        return "new"
    parent = json.loads(state.read_text()).get("parent_run_id")
    try:
        run = tracking.client_for(uri).get_run(parent)
    except Exception:  # noqa: BLE001 -- not on this server: a fresh execution
        return "new"
    status, tags = run.info.status, run.data.tags
    if tags.get("spec_fingerprint") not in (None, spec.fingerprint()):
        print(f"error: {study_dir} holds an execution of another version of study "
              f"{spec.name!r} (parent run {parent}). Run the changed study as a re-study "
              f"(python -m study.schedule run --study {spec.name}{hints} --space "
              f"{shlex.quote(_space_option(spec))}) or under a new name "
              "(--study NEW-NAME).", file=sys.stderr)
        return "conflict"
    if status == "FINISHED":
        print(f"study {spec.name!r} already ran (parent run {parent}, FINISHED); its report: "
              f"{study_dir / 'report' / 'report.html'} and MLflow {uri}. To run it again as "
              f"a new execution: python -m study.schedule run --study {spec.name}{hints} "
              "--force")
        return "done"
    print(f"study {spec.name!r}: continuing its unfinished execution (parent run {parent}, "
          f"{status})")
    return "resume"


def _on_cluster(args: argparse.Namespace, spec, space: str) -> int:
    """``--cluster``: validate, bring the cluster up or attach, run the study as a Ray job."""
    from study.cluster import ClusterError, ClusterRequest, space_argument, submit

    try:
        request = ClusterRequest(
            config=args.cluster, space=space_argument(space, spec), study=args.study,
            data=None if args.data is None else str(args.data), data_format=args.data_format,
            storage_path=args.storage_path, tracking_uri=args.tracking_uri,
            resume=args.resume, dry_run=args.dry_run,
            max_concurrent_trials=args.max_concurrent_trials)
        return submit(request, spec)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("detached: the study job keeps running on the cluster", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
