"""Load test of the tracking store: N concurrent simulated trials through the project's own
trial logger (``study.tracking``) against the managed MLflow server, on 127.0.0.1 only.

Each simulated trial does what a real one does to MLflow: look for its run (search), create
it; then per epoch one batch of ``--metrics`` values (its params and tags with the first)
through ``RunLogger`` with the trials' policy (buffered, retried and spilled, never dropped;
sent at most every ``--send-interval`` seconds, 2 by default as in the trials, the last epoch
at once; ``--send-interval 0``: a request per epoch), paced (``--pace 1``: one epoch per
second per trial) or flat out (``--pace 0``); then tags and the end of the run. Trials start
spread over ``--stagger`` seconds (2 by default, as Tune starts them one after the other; 0:
all in the same instant, their epochs then in lockstep: the worst burst). Start calls
that fail are retried after a backoff (as Tune restarts a trial), and counted as errors.
MLflow's own HTTP retries are off, so every failed request is counted.

Bounded: at most 128 trials, 200 epochs, ``--max-seconds`` (default 600) of load; trials still
logging at the deadline finish at once (their leftovers spilled and counted). The server, and
PostgreSQL for ``--store postgres``, live in a temporary runs folder and are stopped at the end.

Prints and writes (``--out``, JSON): errors (failed requests, by answer), requests/s,
p50/p95/p99 request latency, runs FINISHED with their full history, spilled and dropped
entries. Examples::

    python bench/tracking_load.py --store postgres --login --trials 64 --pace 1
    python bench/tracking_load.py --store sqlite --trials 32 --pace 0 --workers 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_TRIALS, MAX_EPOCHS = 128, 200


@dataclass(frozen=True)
class LoadConfig:
    store: str  # sqlite | postgres
    login: bool
    trials: int
    epochs: int
    metrics: int
    pace_s: float  # seconds per epoch per trial; 0 = flat out
    workers: int
    max_seconds: float
    send_interval_s: float = 2.0  # the trial logger's (study.tracking.TRIAL_POLICY)
    stagger_s: float = 2.0  # trials start spread evenly over this many seconds

    def __post_init__(self) -> None:
        if self.store not in ("sqlite", "postgres"):
            raise ValueError(f"--store must be sqlite or postgres, got {self.store!r}")
        if not 1 <= self.trials <= MAX_TRIALS:
            raise ValueError(f"--trials must be 1..{MAX_TRIALS}, got {self.trials}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"--epochs must be 1..{MAX_EPOCHS}, got {self.epochs}")
        if (not 1 <= self.metrics <= 100 or self.pace_s < 0 or self.workers < 1
                or self.send_interval_s < 0 or self.stagger_s < 0):
            raise ValueError("need 1 <= --metrics <= 100, --pace >= 0, --workers >= 1, "
                             "--send-interval >= 0, --stagger >= 0")
        if not 10 <= self.max_seconds <= 1800:
            raise ValueError(f"--max-seconds must be 10..1800, got {self.max_seconds}")

    @property
    def mode(self) -> str:
        return "paced" if self.pace_s > 0 else "flat"


@dataclass
class TrialStats:
    run_id: str | None = None
    latencies: list[float] = field(default_factory=list)
    start_latencies: list[float] = field(default_factory=list)  # search + create-run
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    finished: bool = False
    cut: bool = False
    dropped: int = 0
    reconnects: int = 0


def _timed(stats: TrialStats, call):  # type: ignore[no-untyped-def]
    """One MLflow client call (a start request), timed and counted; raises on failure."""
    stats.requests += 1
    started = time.monotonic()
    try:
        return call()
    except Exception as e:
        from study.tracking._send import classify_exception

        stats.errors[classify_exception(e).detail[:80]] += 1
        raise
    finally:
        stats.latencies.append(time.monotonic() - started)
        stats.start_latencies.append(time.monotonic() - started)


def simulated_trial(uri: str, exp_id: str, parent: str, index: int, cfg: LoadConfig,
                    deadline: float, spill: Path, stats: TrialStats) -> None:
    from study import tracking

    time.sleep(index * cfg.stagger_s / cfg.trials)  # Tune starts trials one after the other
    client = tracking.client_for(uri)
    ident = {"phase": "search", "variant": "FT", "split": "0", "trial": f"t{index:03d}"}
    backoff = 0.5
    while stats.run_id is None:  # a trial that cannot start is restarted (as Tune does)
        try:
            _timed(stats, lambda: tracking.find_child_run(client, exp_id, parent, **ident))
            run = _timed(stats, lambda: client.create_run(
                exp_id, tags={**ident, tracking.PARENT_TAG: parent}))
            stats.run_id = run.info.run_id
        except Exception:  # noqa: BLE001 - counted in _timed
            if time.monotonic() + backoff > deadline:
                return
            time.sleep(backoff)
            backoff = min(2 * backoff, 10.0)
    policy = dataclasses.replace(tracking.TRIAL_POLICY, send_interval_s=cfg.send_interval_s,
                                 finish_wait_s=max(1.0, deadline - time.monotonic()))
    log = tracking.RunLogger(uri, stats.run_id, policy=policy, spill_dir=spill)
    log.params({"base_lr": 10 ** -(1 + index % 4), "lambda": 0.5, "trial": index})
    log.tags({"node_id": platform.node(), "worker_pid": str(os.getpid())})
    start = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        if time.monotonic() > deadline:
            stats.cut = True
            break
        log.metrics(epoch, {"epoch": epoch, **{f"m{k}": (epoch * 7 + k) % 13 / 13
                                               for k in range(cfg.metrics - 1)}})
        log.flush(force=epoch == cfg.epochs)  # as a trial: its last epoch at once
        if cfg.pace_s > 0:
            time.sleep(max(0.0, start + epoch * cfg.pace_s - time.monotonic()))
    log.tags({"stop_reason": "budget" if not stats.cut else "cut"})
    stats.finished = log.finish("FINISHED", wait_s=max(1.0, deadline + 60 - time.monotonic()))
    stats.latencies += log.request_s
    stats.requests += log.requests
    stats.errors["logger: not accepted (retried)"] += log.failed_requests
    stats.dropped = len(log.dropped)
    stats.reconnects = log.reconnects


def _complete(client, run_id: str, cfg: LoadConfig) -> bool:  # type: ignore[no-untyped-def]
    """FINISHED, with every metric's history 1..epochs."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        return False
    keys = ["epoch", *(f"m{k}" for k in range(cfg.metrics - 1))]
    want = list(range(1, cfg.epochs + 1))
    return all(sorted(m.step for m in client.get_metric_history(run_id, k)) == want
               for k in keys)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_load(cfg: LoadConfig, keep: Path | None = None) -> dict:
    """Start the server, run the trials, check every history; the result as a dict."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # count every failure ourselves
    os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(10, cfg.trials))
    from study import tracking
    from study.server import ensure_server, stop_server
    from study.tracking import _postgres

    runs = Path(tempfile.mkdtemp(prefix="tlstudy-load-", dir="/tmp"))
    runs.chmod(0o755)  # PostgreSQL runs as 'postgres' when we are root: it must reach it
    if cfg.login:
        os.environ["MLFLOW_TRACKING_USERNAME"] = "bench"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = secrets.token_urlsafe(18)
    try:
        t0 = time.monotonic()
        info = ensure_server(runs, backend=cfg.store, workers=cfg.workers, login=cfg.login,
                             timeout_s=300)
        started_s = time.monotonic() - t0
        client = tracking.client_for(info.url)
        exp_id = tracking.experiment_for(client, "load")
        parent = tracking.start_parent_run(client, exp_id)
        stats = [TrialStats() for _ in range(cfg.trials)]
        load_before = [round(x, 2) for x in os.getloadavg()]
        spill = runs / "spill"
        begin = time.monotonic()
        deadline = begin + cfg.max_seconds
        threads = [threading.Thread(target=simulated_trial, daemon=True,
                                    args=(info.url, exp_id, parent, i, cfg, deadline, spill, s))
                   for i, s in enumerate(stats)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline + 120 - time.monotonic()))
        wall = time.monotonic() - begin
        hung = sum(t.is_alive() for t in threads)
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # the check may retry
        complete = sum(1 for s in stats if s.run_id and _complete(client, s.run_id, cfg))
        latencies = [x for s in stats for x in s.latencies]
        starts = [x for s in stats for x in s.start_latencies]
        logged = [x for s in stats for x in s.latencies[len(s.start_latencies):]]
        errors: Counter = Counter()
        for s in stats:
            errors.update(s.errors)
        requests = sum(s.requests for s in stats)
        spilled = len(list(spill.glob("*.pending.json"))) if spill.is_dir() else 0
        result = {
            "config": asdict(cfg), "mode": cfg.mode,
            "server": {"store": info.store, "workers": info.workers, "login": cfg.login,
                       "auth_cache_ttl_s": 300 if cfg.login else None,
                       "start_s": round(started_s, 1)},
            "errors": sum(errors.values()), "errors_by_kind": dict(errors.most_common()),
            "requests": requests, "requests_per_s": round(requests / wall, 1),
            "stale_connections_resent": sum(s.reconnects for s in stats),
            "latency_s": {"p50": round(_pct(latencies, 50), 3),
                          "p95": round(_pct(latencies, 95), 3),
                          "p99": round(_pct(latencies, 99), 3),
                          "max": round(max(latencies, default=float("nan")), 3),
                          "mean": round(statistics.fmean(latencies), 3) if latencies else None},
            "latency_s_start_requests": {q: round(_pct(starts, int(q[1:])), 3)
                                         for q in ("p50", "p95", "p99")},
            "latency_s_logger_requests": {q: round(_pct(logged, int(q[1:])), 3)
                                          for q in ("p50", "p95", "p99")},
            "runs_started": sum(1 for s in stats if s.run_id),
            "runs_complete": complete, "trials": cfg.trials,
            "runs_cut_at_deadline": sum(s.cut for s in stats), "threads_hung": hung,
            "entries_dropped": sum(s.dropped for s in stats), "runs_spilled": spilled,
            "wall_s": round(wall, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_before": load_before,
                        "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return result
    finally:
        stop_server(runs)
        _postgres.stop_postgres(runs)
        if keep is None:
            shutil.rmtree(runs, ignore_errors=True)


def summary_line(r: dict) -> str:
    c = r["config"]
    lat = r["latency_s"]
    return (f"{c['store']}{'+login' if c['login'] else ''} workers={c['workers']} "
            f"send-interval={c.get('send_interval_s', 0):g}s stagger={c.get('stagger_s', 0):g}s "
            f"{r['mode']} trials={c['trials']}x{c['epochs']}ep: errors {r['errors']}/"
            f"{r['requests']}, {r['requests_per_s']} req/s, p50 {lat['p50']} s, p95 "
            f"{lat['p95']} s, p99 {lat['p99']} s (epoch requests p95 "
            f"{r['latency_s_logger_requests']['p95']} s), "
            f"complete {r['runs_complete']}/{c['trials']}, "
            f"dropped {r['entries_dropped']}, spilled {r['runs_spilled']}, wall {r['wall_s']} s, "
            f"load avg {r['machine']['load_avg_before'][0]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/tracking_load.py", description=__doc__.split("\n")[0])
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--login", action="store_true", help="MLflow basic-auth on (login cache on)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--metrics", type=int, default=6, help="values per epoch")
    p.add_argument("--pace", type=float, default=1.0, dest="pace_s",
                   help="seconds per epoch per trial (0: flat out)")
    p.add_argument("--workers", type=int, default=None,
                   help="server workers (default: one per 16 trials)")
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--send-interval", type=float, default=None, dest="send_interval_s",
                   help="the trial logger's least seconds between sends (default: the "
                        "trials', study.tracking.TRIAL_POLICY; 0: a request per epoch)")
    p.add_argument("--stagger", type=float, default=2.0, dest="stagger_s",
                   help="trials start spread evenly over this many seconds (0: all at once)")
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    ns = p.parse_args(argv)
    from study.server import workers_for
    from study.tracking import TRIAL_POLICY

    try:
        cfg = LoadConfig(store=ns.store, login=ns.login, trials=ns.trials, epochs=ns.epochs,
                         metrics=ns.metrics, pace_s=ns.pace_s,
                         workers=ns.workers or workers_for(ns.trials),
                         max_seconds=ns.max_seconds,
                         stagger_s=ns.stagger_s,
                         send_interval_s=(TRIAL_POLICY.send_interval_s
                                          if ns.send_interval_s is None
                                          else ns.send_interval_s))
    except ValueError as e:
        p.error(str(e))
    result = run_load(cfg)
    print(summary_line(result))
    if ns.out is not None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
