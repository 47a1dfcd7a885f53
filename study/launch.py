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

Exit status: 0 done (or already done), 1 the environment failed (the MLflow server did not
start, no space left on the runs folder's disk), 2 bad input (space
file, data, another version of the study under this name), 3 the study is being run by another
process (launcher or ``study.schedule``; one execution at a time), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings
from pathlib import Path

from search_spaces import SpecError, load_spec
from trainables.datasets import FORMATS
from trainables.records import DatasetError


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
                   help="run the study on a running Ray cluster: HOST:PORT (the head's GCS "
                        "port, 6379), ray://HOST:PORT (Ray Client) or auto (the cluster `ray "
                        "start` runs here); default $RAY_ADDRESS, else a local Ray")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at once at most, when the cluster can grow beyond what is up "
                        "now (e.g. an autoscaling KubeRay cluster); default: what fits now")
    p.add_argument("--dry-run", action="store_true",
                   help="with --cluster: validate and print the cluster commands, run nothing")
    p.add_argument("--on-head", action="store_true",
                   help="internal: the driver job on the cluster's head (--cluster submits it)")
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
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress line, not Tune's tables
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from trainables.backbones import available_backbones

    space = "smoke" if args.smoke_test else (args.space or "quick")
    try:
        spec = load_spec(space, known_backbones=available_backbones())
        if args.data is not None:
            spec = spec.with_dataset(args.data, args.data_format)
        if args.study:
            spec = spec.with_name(args.study)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cluster is not None and not args.on_head:
        return _on_cluster(args, spec, space)
    runs = args.runs_dir.expanduser().resolve()
    from study._schedule_lock import StudyLock, StudyLocked

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
        return _run_here(args, spec, runs)
    finally:
        lock.release()


def _run_here(args: argparse.Namespace, spec, runs: Path) -> int:  # type: ignore[no-untyped-def]
    """Run (or continue) the study with this process as the driver; the study lock is held."""
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    from study._login import driver_login
    from study.server import ServerError

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
    address = None if args.on_head else _attach_address(args)
    if address == "error":
        return 2
    if address is not None:
        from study._attach import attach
        from study.cluster import ClusterError

        try:
            found = attach(address, runs, uri, storage_path=args.storage_path)
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
              f"--study-dir {runs})")
    from study._phases import TrialsFailed
    from study.run import run_study

    if not args.resume:
        verdict = _previous_execution(spec, runs / spec.name, uri)
        if verdict == "done":
            return 0
        if verdict == "conflict":
            return 2
        args.resume = verdict == "resume"
    try:
        run_study(spec, runs / spec.name, uri, resume=args.resume,
                  storage_path=args.storage_path,
                  max_concurrent_trials=args.max_concurrent_trials, **on_cluster)
    except (DatasetError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: runs ended as KILLED; continue with --resume", file=sys.stderr)
        return 130
    except TrialsFailed as exc:
        print(f"error: the study failed: {exc}\n(each trial's full error: Tune's error.txt "
              "under the storage path; fix the cause and continue with --resume)",
              file=sys.stderr)
        return 1
    except Exception as exc:
        if not out_of_space(exc):
            raise
        print(f"error: no space left on the device holding {runs} ({exc}). Free some space "
              "and run the same command again: the study continues where it stopped.",
              file=sys.stderr)
        return 1
    print(f"MLflow UI: {uri}")
    return 0


def expected_concurrency(spec, resources=None) -> int:  # type: ignore[no-untyped-def]
    """Trials the study can run at once: ``resources`` (a cluster's, {"CPU": n, "GPU": m}) or
    this machine's cores and GPUs, divided by what one trial reserves."""
    if resources is None:
        import torch

        resources = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
    r = spec.resources
    fits = [resources.get("CPU", 0.0) / r.cpus] if r.cpus > 0 else []
    if r.gpus > 0:
        fits.append(resources.get("GPU", 0.0) / r.gpus)
    return max(1, int(min(fits))) if fits else 1


def _attach_address(args: argparse.Namespace) -> str | None:
    """``--address``, else ``RAY_ADDRESS``, checked (``"error"``: refused, message printed)."""
    from study._attach import resolve_address
    from study.cluster import ClusterError

    try:
        return resolve_address(args.address, os.environ)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return "error"


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


def _previous_execution(spec, study_dir: Path, uri: str) -> str:
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
              f"(python -m study.schedule run --study {spec.name}) or under a new name "
              "(--study NEW-NAME).", file=sys.stderr)
        return "conflict"
    if status == "FINISHED":
        print(f"study {spec.name!r} already ran (parent run {parent}, FINISHED); its report: "
              f"{study_dir / 'report' / 'report.html'} and MLflow {uri}. To run it again as "
              f"a new execution: python -m study.schedule run --study {spec.name} --force")
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
