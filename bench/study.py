"""The whole study, measured: where a study's slot-time goes, and what it costs the tracking
server and the disk.

It runs shipped studies (default: smoke, then quick) with ``python -m study.launch`` from one
runs folder whose MLflow server is started first (warm: data written and the server answering
before the first study), each under a fresh study name, then reads everything back from MLflow
and the server's access log:

* **slot-time in passes**: Σ ``epoch_time_s`` (training + validation passes of every epoch of
  every trial) ÷ Σ time each trial held its slot (its run's start to its end when its worker
  finished it, else to its last report), and ÷ (slots × wall time of the trials, from the
  first trial's start to the last run's end): the second also counts idle slots (Tune's
  starts, a one-slot tail, waits at the end of a phase); slots = cores ÷ CPUs per trial;
* **fixed cost per trial** and **per epoch**: a least-squares fit of each run's duration minus
  its passes against its epochs (intercept: start-up, MLflow run, final logging; slope:
  reporting and checkpointing per epoch);
* **requests per trial-epoch**: requests the server logged while the study ran ÷ trial-epochs
  (all requests, and the per-epoch ones: ``log-batch`` and ``/health``);
* **bytes written per trial-epoch** at paper.yaml's model and ROI size
  (``bench/checkpoint_bytes.py``; skipped with ``--no-bytes``).

``--code DIR`` runs the launcher of another checkout (e.g. a worktree of an older commit) against
the same server, so before/after come from one run of this script on one machine.

    python bench/study.py                                   # smoke + quick: ~10 min on 2 cores
    python bench/study.py --spaces smoke --no-bytes         # ~2 min
    python bench/study.py --json bench/results/study-after.json
    python bench/study.py --compare bench/results/study-before.json bench/results/study-after.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_LINE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) .*\"(GET|POST|PUT|PATCH|DELETE) (\S+)")


def launch(space: str, study: str, runs_dir: Path, code: Path) -> float:
    """Run one study to its end; returns its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "study.launch", "--space", space, "--study", study,
                    "--runs-dir", str(runs_dir)], cwd=code, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def start_server(runs_dir: Path, code: Path) -> tuple[str, Path]:
    """The runs folder's managed MLflow server, started by ``code``'s own ``study.server``
    (its launcher then finds it); returns its URL and access log."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-m", "study.server", "start", "--study-dir",
                          str(runs_dir)], cwd=code, env=env, check=True, capture_output=True,
                         text=True).stdout
    url = re.search(r"http://127\.0\.0\.1:\d+", out)
    if url is None:
        raise SystemExit(f"no server URL in: {out}")
    return url.group(0), runs_dir / "mlflow" / "server.log"


def local_slots(space: str) -> int:
    """Trials at once on this machine (its cores ÷ the space's CPUs per trial)."""
    from search_spaces import load_spec

    return max(1, int((os.cpu_count() or 1) // load_spec(space).resources.cpus))


def server_requests(log: Path, start_ms: int, end_ms: int) -> dict[str, int]:
    """Requests in the server's access log between two instants (1 s resolution)."""
    counts = {"all": 0, "log-batch": 0, "health": 0}
    lo, hi = start_ms // 1000 - 1, end_ms // 1000 + 1
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S").astimezone().timestamp()
        if lo <= t <= hi:
            counts["all"] += 1
            counts["log-batch"] += m.group(3).endswith("/runs/log-batch")
            counts["health"] += m.group(3).startswith("/health")
    return counts


def analyse(tracking_uri: str, study: str, log: Path, slots: int) -> dict:
    from study import tracking

    client = tracking.client_for(tracking_uri)
    exp = client.get_experiment_by_name(study)
    parents = [r for r in client.search_runs([exp.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    parent = parents[0]
    runs = tracking.child_runs(client, exp.experiment_id, parent.info.run_id)
    rows = []
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "epoch_time_s")
        passes = [m.value for m in history]
        last = max([m.timestamp for m in history], default=r.info.start_time)
        # a run its worker finished ends when the trial did; one ended by someone else (the
        # driver, at once or at the study's end) is counted to its last report
        end = r.info.end_time if r.info.status == "FINISHED" and r.info.end_time else last
        rows.append({"phase": r.data.tags.get("phase"), "start": r.info.start_time,
                     "end": end, "epochs": len(passes), "passes_s": float(sum(passes))})
    held = sum((r["end"] - r["start"]) / 1000 for r in rows)
    passes = sum(r["passes_s"] for r in rows)
    epochs = sum(r["epochs"] for r in rows)
    first = min(r["start"] for r in rows)
    last = max([r["end"] for r in rows] + [r.info.end_time or 0 for r in runs])
    x = np.array([r["epochs"] for r in rows], dtype=float)
    y = np.array([(r["end"] - r["start"]) / 1000 - r["passes_s"] for r in rows])
    per_epoch, fixed = np.polyfit(x, y, 1) if len(set(x)) > 1 else (0.0, float(y.mean()))
    req = server_requests(log, parent.info.start_time, parent.info.end_time or last)
    return {
        "study": study, "trials": len(rows), "trial_epochs": epochs, "slots": slots,
        "phases_wall_s": (last - first) / 1000, "slot_held_s": held, "passes_s": passes,
        "passes_share_of_held": passes / held, "passes_share_of_slots": passes / (
            slots * (last - first) / 1000),
        "fixed_s_per_trial": float(fixed), "overhead_s_per_epoch": float(per_epoch),
        "requests": req, "requests_per_trial_epoch": req["all"] / epochs,
        "per_epoch_requests_per_trial_epoch": (req["log-batch"] + req["health"]) / epochs,
    }


def request_fit(studies: dict[str, dict]) -> dict[str, float]:
    """Requests = a · trials + b · trial-epochs, least squares over the studies run (two or
    more with different epochs per trial): b is what one more epoch costs the server, a what
    one more trial costs (create the run, its params and tags, final metrics, artifacts)."""
    if len(studies) < 2:
        return {}
    x = np.array([[r["trials"], r["trial_epochs"]] for r in studies.values()], dtype=float)
    out = {}
    for name, pick in (("all", lambda q: q["all"]),
                       ("log_batch_health", lambda q: q["log-batch"] + q["health"])):
        y = np.array([pick(r["requests"]) for r in studies.values()], dtype=float)
        (per_trial, per_epoch), *_ = np.linalg.lstsq(x, y, rcond=None)
        out[f"{name}_per_trial"], out[f"{name}_per_trial_epoch"] = per_trial, per_epoch
    return out


def compare(paths: list[Path]) -> None:
    """Print measurements side by side (e.g. before/after JSON files of this script)."""
    runs = [json.loads(p.read_text()) for p in paths]
    print(f"{'':44}" + "".join(f"{r['label'][:18]:>20}" for r in runs))
    for space in runs[0]["studies"]:
        rows = [("passes / slot-time held by trials (%)", "passes_share_of_held", 100),
                ("passes / (slots x wall of the trials) (%)", "passes_share_of_slots", 100),
                ("fixed seconds per trial (fit)", "fixed_s_per_trial", 1),
                ("overhead seconds per epoch (fit)", "overhead_s_per_epoch", 1),
                ("wall of the trials (s)", "phases_wall_s", 1),
                ("log-batch + health per trial-epoch", "per_epoch_requests_per_trial_epoch", 1)]
        print(f"{space}:")
        for title, key, scale in rows:
            print(f"  {title:<42}" + "".join(
                f"{scale * r['studies'][space][key]:>20.2f}" for r in runs))
    fits = [request_fit(r["studies"]) for r in runs]
    if all(fits):
        print("requests, least squares over the studies (a per trial + b per trial-epoch):")
        for key in ("log_batch_health_per_trial_epoch", "log_batch_health_per_trial",
                    "all_per_trial"):
            print(f"  {key:<42}" + "".join(f"{f[key]:>20.2f}" for f in fits))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", default="smoke,quick")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--code", type=Path, default=ROOT,
                   help="the checkout whose launcher runs the studies (default: this one)")
    p.add_argument("--label", default=None, help="a name for this measurement in the JSON")
    p.add_argument("--no-bytes", action="store_true", help="skip the checkpoint-size part")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--compare", type=Path, nargs="+", default=None,
                   help="print earlier JSON results side by side, run nothing")
    args = p.parse_args(argv)
    if args.compare:
        compare(args.compare)
        return {}
    runs_dir = args.runs_dir.resolve()
    url, log_path = start_server(runs_dir, args.code.resolve())  # warm before the first study
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.code,
                            capture_output=True, text=True).stdout.strip()
    out: dict = {"label": args.label or commit, "commit": commit,
                 "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor()}",
                 "when": datetime.now(UTC).isoformat(timespec="seconds"), "studies": {}}
    for space in args.spaces.split(","):
        study = f"bench-{space}-{int(time.time())}"
        print(f"{space}: running {study} ...", flush=True)
        wall = launch(space, study, runs_dir, args.code.resolve())
        res = {"wall_s": wall, **analyse(url, study, log_path, local_slots(space))}
        out["studies"][space] = res
        print(f"{space}: {res['trials']} trials, {res['trial_epochs']} trial-epochs, "
              f"{res['slots']} slots, {wall:.0f} s wall\n"
              f"  passes (train + val) / slot-time held by trials: "
              f"{100 * res['passes_share_of_held']:.1f} %\n"
              f"  passes / (slots x phases' wall time):            "
              f"{100 * res['passes_share_of_slots']:.1f} %\n"
              f"  fixed cost per trial {res['fixed_s_per_trial']:.2f} s, "
              f"per epoch {res['overhead_s_per_epoch']:.3f} s\n"
              f"  MLflow requests per trial-epoch: {res['requests_per_trial_epoch']:.2f} all, "
              f"{res['per_epoch_requests_per_trial_epoch']:.2f} log-batch + health",
              flush=True)
    out["request_fit"] = request_fit(out["studies"])
    if out["request_fit"]:
        f = out["request_fit"]
        print(f"MLflow requests (fit over the studies): "
              f"{f['log_batch_health_per_trial_epoch']:.2f} log-batch + health per trial-epoch, "
              f"{f['all_per_trial']:.1f} of any kind per trial")
    if not args.no_bytes:
        import checkpoint_bytes

        out["checkpoint_bytes"] = checkpoint_bytes.main([])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"written: {args.json}")
    return out


if __name__ == "__main__":
    main()
