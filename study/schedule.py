"""``python -m study.schedule``: scheduled re-studies — run a study again when its data, code or
search space changed, warm-started from its last execution, and say what changed.

Examples::

    python -m study.schedule run --study quick                  # run once if anything changed
    python -m study.schedule run --study bcdr --space paper --data /data/BCDR-F03_dataset \\
        --data-format bcdr --force                              # run even if nothing changed
    python -m study.schedule install --study quick --cron "0 3 * * 1"   # Mondays 03:00, crontab
    python -m study.schedule install --study paper --cron "0 3 * * 1" --cluster ray_cluster.yaml
    python -m study.schedule list
    python -m study.schedule remove --study quick

``run`` compares the current data fingerprint (source contents + ROI settings), code version
(git commit) and search space (spec fingerprint) with the study's last execution as MLflow
records it (its parent run's tags) and skips with a one-line reason when nothing changed. A
last execution that failed counts as a change (the next run retries). Otherwise it runs a
re-study: a new parent run tagged ``previous_run_id``, ``changed`` and ``trigger``, whose
searches first evaluate the previous best configurations, and whose report compares with the
previous execution; the one-line verdict is printed and logged as the ``verdict`` tag. A lock
in the study folder keeps two executions of one study from running at once.

Exit status of ``run``: 0 ran or skipped, 1 the execution failed (FAILED parent run with a
``failure_reason`` tag), 2 bad input, 3 the study is locked by another execution.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from search_spaces import SHIPPED, SpecError
from study.scheduling import _cron as cron
from trainables.datasets import FORMATS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study name (MLflow experiment and folder)")
    p.add_argument("--space", default=None,
                   help="study file (YAML) or shipped name; default: the space recorded with "
                        "the study (RUNS_DIR/STUDY/space.json), else the shipped file of the "
                        "study's name (quick, smoke, paper)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (with --data-format)")
    p.add_argument("--data-format", choices=FORMATS, default=None, help="bcdr, mias or manifest")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="studies, data, caches and the managed MLflow server (default ./runs)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server; default $MLFLOW_TRACKING_URI, else the managed server "
                        "of --runs-dir")
    p.add_argument("--storage-path", default=None,
                   help="Tune's storage (shared storage on a multi-node cluster)")
    p.add_argument("--restudy-trials", type=int, default=None,
                   help="search budget per variant × split of a re-study (default: the space's "
                        "search.trials); its first trial is the previous best, so a re-study "
                        "can afford fewer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.schedule", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the study once if its data, code or space changed")
    _common(r)
    r.add_argument("--force", action="store_true", help="run even if nothing changed")
    r.add_argument("--cluster", type=Path, default=None,
                   help="on a Ray cluster's head: its cluster-launcher config "
                        "(~/ray_bootstrap_config.yaml); Ray and MLflow as the head runs them")
    r.add_argument("--ray-address", default=None,
                   help="join this running Ray cluster (its GCS address, e.g. 10.0.0.5:6379, "
                        "this machine being one of its nodes) instead of a local one; "
                        "ray:// (Ray Client) is refused, as by study.launch")
    i = sub.add_parser("install", help="run the study on a schedule (crontab entry; with "
                                       "--cluster: print a systemd timer and a CronJob)")
    _common(i)
    i.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * 1"')
    i.add_argument("--cluster", type=Path, default=None,
                   help="print a systemd timer for the cluster's head and a Kubernetes CronJob "
                        "instead of installing a crontab entry")
    i.add_argument("--crontab", type=Path, default=None,
                   help="a crontab file to edit instead of the user's crontab (crontab -l/-)")
    ls = sub.add_parser("list", help="the scheduled studies in the crontab")
    ls.add_argument("--crontab", type=Path, default=None)
    rm = sub.add_parser("remove", help="remove a study's crontab entry")
    rm.add_argument("--study", required=True)
    rm.add_argument("--crontab", type=Path, default=None)
    args = p.parse_args(argv)
    if getattr(args, "ray_address", None) and args.ray_address.startswith("ray://"):
        p.error(f"--ray-address {args.ray_address}: Ray Client cannot run a study (Ray Tune "
                "then runs the study's driver loop in an actor on the head, apart from this "
                "process's runs folder and MLflow login). Give the head's GCS address "
                "(HOST:6379) from a machine of the cluster, or run the schedule on the head; "
                "`python -m study.launch --address ray://...` prints both commands")
    if args.command in ("run", "install"):
        if (args.data is None) != (args.data_format is None):
            p.error("--data and --data-format go together")
        if args.restudy_trials is not None and args.restudy_trials < 1:
            p.error("--restudy-trials must be >= 1")
        if args.space is None:
            args.space = default_space(args.study, args.runs_dir)
            if args.space is None:
                p.error(f"--space is required: {args.study!r} is not a shipped study "
                        f"({', '.join(SHIPPED)}) and {args.runs_dir}/{args.study} holds no "
                        "space recorded by study.launch")
    return args


def default_space(study: str, runs_dir: Path) -> str | None:
    """The space of ``study`` when ``--space`` is not given: the one recorded with the study
    by ``study.launch`` (``<runs-dir>/<study>/space.json``), else the shipped file of that
    name (quick, smoke, paper), else None."""
    from study.launch import SPACE_RECORD

    recorded = runs_dir.expanduser().resolve() / study / SPACE_RECORD
    if recorded.is_file():
        return str(recorded)
    return study if study in SHIPPED else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "install":
            return _install(args)
        if args.command == "list":
            return _list(args)
        return _remove(args)
    except cron.CronError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from study.scheduling._run import ScheduledRun, run_once

    config = ScheduledRun(study=args.study, space=args.space, runs_dir=args.runs_dir,
                          data=args.data, data_format=args.data_format,
                          tracking_uri=args.tracking_uri, force=args.force,
                          cluster=args.cluster, ray_address=args.ray_address,
                          storage_path=args.storage_path,
                          restudy_trials=args.restudy_trials)
    return run_once(config, err=lambda s: print(s, file=sys.stderr))


def _space_value(space: str) -> str:
    """A shipped name as is, a file as an absolute path (cron does not run in this folder)."""
    path = Path(space).expanduser()
    return str(path.resolve()) if path.exists() else space


def run_argv(args: argparse.Namespace, *, python: str, runs_dir: str, space: str,
             extra: list[str] | None = None) -> list[str]:
    argv = [python, "-m", "study.schedule", "run", "--study", args.study, "--space", space,
            "--runs-dir", runs_dir]
    for flag, value in (("--data", args.data and str(Path(args.data).expanduser().resolve())),
                        ("--data-format", args.data_format),
                        ("--tracking-uri", args.tracking_uri),
                        ("--storage-path", args.storage_path),
                        ("--restudy-trials", args.restudy_trials and str(args.restudy_trials))):
        if value:
            argv += [flag, value]
    return argv + (extra or [])


def _install(args: argparse.Namespace) -> int:
    from search_spaces import load_spec

    expr = cron.check_cron(args.cron)
    try:
        spec = load_spec(args.space)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cluster is not None:
        return _print_cluster_units(args, expr, spec)
    runs = args.runs_dir.expanduser().resolve()
    from study.cluster import PROJECT_ROOT

    argv = run_argv(args, python=sys.executable, runs_dir=str(runs),
                    space=_space_value(args.space))
    entry = cron.CronEntry(args.study, expr, cron.cron_command(
        argv, workdir=PROJECT_ROOT, log_file=runs / args.study / "schedule.log"))
    (runs / args.study).mkdir(parents=True, exist_ok=True)
    cron.write_crontab(cron.with_entry(cron.read_crontab(args.crontab), entry), args.crontab)
    where = args.crontab or "your crontab (crontab -l)"
    print(f"installed in {where}:\n{entry.line()}\noutput goes to "
          f"{runs / args.study / 'schedule.log'}")
    return 0


def _print_cluster_units(args: argparse.Namespace, expr: str, spec) -> int:
    from study.cluster import (
        HEAD_CONFIG,
        HEAD_RUNS_DIR,
        ClusterError,
        load_cluster_config,
        space_argument,
    )

    try:
        config = load_cluster_config(args.cluster)
        project = config.project_mount()
        space = space_argument(args.space, spec)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def home(p: str) -> str:  # systemd's %h for the user's home
        return "%h/" + p[2:] if p.startswith("~/") else p

    head = run_argv(args, python="%h/tlstudy-venv/bin/python", runs_dir=home(HEAD_RUNS_DIR),
                    space=space, extra=["--cluster", home(HEAD_CONFIG)])
    k8s = run_argv(args, python="python", runs_dir="/runs", space=space,
                   extra=["--ray-address", "$(RAY_ADDRESS)"])
    print("# --- systemd timer on the cluster's head node " + "-" * 40)
    print(cron.systemd_units(args.study, expr, head, workdir=home(project)))
    print("# --- or a Kubernetes CronJob (KubeRay cluster) " + "-" * 38)
    print(cron.kubernetes_cronjob(args.study, expr, k8s))
    return 0


def _list(args: argparse.Namespace) -> int:
    found = cron.entries(cron.read_crontab(args.crontab))
    if not found:
        print("no scheduled studies")
    for e in found:
        print(f"{e.study}\t{e.schedule}\t{e.command}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    text, removed = cron.without_entry(cron.read_crontab(args.crontab), args.study)
    if not removed:
        print(f"error: no scheduled study {args.study!r}", file=sys.stderr)
        return 1
    cron.write_crontab(text, args.crontab)
    print(f"removed the schedule of {args.study}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
