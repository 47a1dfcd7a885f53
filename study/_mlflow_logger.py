"""``RunLogger``: batched, buffering, retrying logging into one MLflow run.

Why not ``mlflow.log_metric`` or Ray's ``MLflowLoggerCallback``: both send one HTTP request per
value, and both raise (after MLflow's own retries, minutes) when the server is away, which
would either stall or kill a trial. Here everything goes into a buffer first and leaves in
``log_batch`` requests inside MLflow's limits; when the server is unreachable the buffer is
kept and sent on a later flush, with exponential backoff and a bounded wait. Nothing is dropped
silently: a failed delivery logs a warning with the counts held, a rejected batch (4xx) an error
with what was rejected, and a logger that cannot deliver at ``finish`` writes its buffer to
``spill_dir`` (if given) for ``replay_spilled`` to deliver later.

Before each attempt a ``GET /health`` (``probe_timeout_s``, unauthenticated even with
basic-auth) tells "server away" from "server up" in a second, so a down server costs training
no time. A server that dies in the middle of a request is left to MLflow's own HTTP retries
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_BACKOFF_FACTOR``, minutes by default): that request
succeeds if the server is back in time, else fails and its entries stay buffered.

Re-sending after a lost reply is harmless: the SQL store drops duplicate metric rows (same key,
step, timestamp, value), and re-logging a param with the same value is accepted.

A logger pickles to (tracking URI, run id, buffer, policy) — the MLflow client is rebuilt on
first use — so it can be handed to a Ray trial. It is not thread-safe.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study import _mlflow_limits as lim
from study._mlflow_proc import healthy

logger = logging.getLogger(__name__)

TerminalStatus = Literal["FINISHED", "FAILED", "KILLED"]
_TERMINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class RetryPolicy:
    """When a ``RunLogger`` sends, and how long it waits for an unreachable server.

    ``flush_every`` buffered metrics, or ``flush_interval_s`` seconds since the last send,
    trigger a send from ``metrics()`` (one attempt, no waiting: training goes on). ``flush()``
    retries for up to ``flush_wait_s`` seconds (default 0: one attempt, so a per-epoch flush
    never stalls training), ``finish()`` for up to ``finish_wait_s``; waits between attempts
    grow from ``backoff_initial_s`` to ``backoff_max_s``. ``probe_timeout_s``
    bounds the ``/health`` check made before each attempt; ``warn_every_s`` rate-limits the
    "server unreachable" warning.
    """

    flush_every: int = 1000
    flush_interval_s: float = 30.0
    flush_wait_s: float = 0.0
    finish_wait_s: float = 120.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    probe_timeout_s: float = 2.0
    warn_every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {self.flush_every}")
        for name in ("flush_interval_s", "flush_wait_s", "finish_wait_s", "warn_every_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s, got "
                             f"{self.backoff_initial_s}, {self.backoff_max_s}")
        if self.probe_timeout_s <= 0:
            raise ValueError(f"probe_timeout_s must be > 0, got {self.probe_timeout_s}")


@dataclass(frozen=True)
class _Artifact:
    """A pending artifact: JSON text to write as ``name``, or a local file to upload."""

    kind: Literal["text", "file"]
    name: str  # artifact file name (text) or local path (file)
    artifact_path: str | None = None
    text: str | None = None


class _Transient(Exception):
    """Delivery failed in a way worth retrying (server away, 5xx, 429)."""


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, MlflowException):
        code = e.get_http_status_code()
        return code >= 500 or code == 429
    return isinstance(e, OSError)


class RunLogger:
    """Buffered, batched, retrying logger for one MLflow run.

    Args:
        client_or_uri: an ``MlflowClient`` or a tracking URI.
        run_id: the run to log into (it stays RUNNING until ``finish``).
        policy: send/retry timing (see ``RetryPolicy``).
        spill_dir: where ``finish`` writes what it could not deliver (``<run_id>.pending.json``,
            for ``replay_spilled``); None keeps it only in the error log.

    Use as a context manager to end the run FINISHED, FAILED (exception) or KILLED (Ctrl-C).
    """

    def __init__(self, client_or_uri: MlflowClient | str, run_id: str, *,
                 policy: RetryPolicy | None = None, spill_dir: Path | None = None) -> None:
        if isinstance(client_or_uri, MlflowClient):
            self._client: MlflowClient | None = client_or_uri
            self.tracking_uri = str(client_or_uri.tracking_uri)
        else:
            self._client = None
            self.tracking_uri = str(client_or_uri)
        self.run_id = run_id
        self.policy = policy or RetryPolicy()
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._metrics: list[tuple[str, float, int, int]] = []  # (key, value, timestamp_ms, step)
        self._params: list[tuple[str, str]] = []
        self._tags: list[tuple[str, str]] = []
        self._artifacts: list[_Artifact] = []
        self._status: TerminalStatus | None = None  # requested terminal status not yet sent
        self._finished = False
        self._reset_timers()

    # ------------------------------------------------------------ pickling

    def _reset_timers(self) -> None:
        self._last_send = time.monotonic()
        self._next_try = 0.0
        self._backoff = self.policy.backoff_initial_s
        self._down_since: float | None = None
        self._last_warn = float("-inf")

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_client", "_last_send", "_next_try", "_backoff", "_down_since",
                              "_last_warn")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = None
        self._reset_timers()

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (built from the tracking URI after unpickling)."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------ buffering

    @property
    def pending(self) -> dict[str, int]:
        """Counts of what is buffered and not yet delivered."""
        return {"metrics": len(self._metrics), "params": len(self._params),
                "tags": len(self._tags), "artifacts": len(self._artifacts)}

    def metrics(self, step: int, values: Mapping[str, float], *,
                timestamp_ms: int | None = None) -> None:
        """Buffer ``values`` at ``step`` (an epoch, say); may send if the buffer is due."""
        self._check_open()
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        step = int(step)
        self._metrics.extend(
            (lim.check_key(k, "metric"), lim.metric_value(k, v), ts, step)
            for k, v in values.items()
        )
        due = (len(self._metrics) >= self.policy.flush_every
               or time.monotonic() - self._last_send >= self.policy.flush_interval_s)
        if due and time.monotonic() >= self._next_try:
            self._deliver(wait_s=0.0)

    def params(self, values: Mapping[str, object]) -> None:
        """Buffer params (values over MLflow's 6000 chars are truncated with a marker)."""
        self._check_open()
        self._params.extend((lim.check_key(k, "param"), lim.truncate(v, lim.MAX_PARAM_VAL_LENGTH))
                            for k, v in values.items())

    def tags(self, values: Mapping[str, object]) -> None:
        """Buffer tags (values over MLflow's 8000 chars are truncated with a marker)."""
        self._check_open()
        self._tags.extend((lim.check_key(k, "tag"), lim.truncate(v, lim.MAX_TAG_VAL_LENGTH))
                          for k, v in values.items())

    def artifact_json(self, name: str, obj: object) -> None:
        """Buffer ``obj`` as the JSON artifact ``name`` (serialised now, so later mutation of
        ``obj`` does not matter)."""
        self._check_open()
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        self._artifacts.append(_Artifact("text", lim.check_key(name, "artifact"), text=text))

    def artifact_file(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Buffer the upload of a local file (it must still exist when delivered)."""
        self._check_open()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact file {path} does not exist")
        self._artifacts.append(_Artifact("file", str(path), artifact_path=artifact_path))

    # ------------------------------------------------------------ delivery

    def flush(self, wait_s: float | None = None) -> bool:
        """Send everything buffered, retrying for up to ``wait_s`` seconds (default
        ``policy.flush_wait_s``). True when nothing is left pending."""
        return self._deliver(self.policy.flush_wait_s if wait_s is None else wait_s)

    def finish(self, status: TerminalStatus = "FINISHED", wait_s: float | None = None) -> bool:
        """Flush, then end the run with ``status``; retries for up to ``wait_s`` seconds
        (default ``policy.finish_wait_s``). Idempotent. True when all was delivered; False when
        the server stayed away — the buffer then goes to ``spill_dir`` when set."""
        if status not in _TERMINAL:
            raise ValueError(f"status must be one of {_TERMINAL}, got {status!r}")
        if self._finished:
            return self._status is None and not any(self.pending.values())
        self._status = status
        self._finished = True
        ok = self._deliver(self.policy.finish_wait_s if wait_s is None else wait_s)
        if not ok:
            self._give_up()
        return ok

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED")
        else:
            self.finish("FAILED")

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"RunLogger for run {self.run_id} is finished")

    def _deliver(self, wait_s: float) -> bool:
        """Attempt delivery until done or ``wait_s`` has passed; True when nothing is pending."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._attempt()
            except _Transient as e:
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                delay = self._backoff
                self._backoff = min(2 * self._backoff, self.policy.backoff_max_s)
                self._next_try = now + delay
                if now + delay > deadline:
                    self._warn_down(str(e))
                    return False
                time.sleep(delay)
                continue
            self._recovered()
            return True

    def _attempt(self) -> None:
        """One pass over the buffer; raises ``_Transient`` at the first retryable failure
        (what was sent before it is removed from the buffer)."""
        if self.tracking_uri.startswith(("http://", "https://")) and not healthy(
            self.tracking_uri, timeout_s=self.policy.probe_timeout_s
        ):
            raise _Transient(f"{self.tracking_uri}/health does not answer")
        self._last_send = time.monotonic()
        self._send_batches("params", self._params, lim.MAX_PARAMS_TAGS_PER_BATCH,
                           lambda b: self.client.log_batch(
                               self.run_id, params=[Param(k, v) for k, v in b]))
        self._send_batches("tags", self._tags, lim.MAX_PARAMS_TAGS_PER_BATCH,
                           lambda b: self.client.log_batch(
                               self.run_id, tags=[RunTag(k, v) for k, v in b]))
        self._send_batches("metrics", self._metrics, lim.MAX_METRICS_PER_BATCH,
                           lambda b: self.client.log_batch(
                               self.run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in b]))
        while self._artifacts:
            self._send(f"artifact {self._artifacts[0].name}", 1,
                       lambda: self._upload(self._artifacts[0]))
            self._artifacts.pop(0)
        if self._status is not None:
            status = self._status
            self._send(f"status {status}", 1,
                       lambda: self.client.set_terminated(self.run_id, status=status))
            self._status = None

    def _send_batches(self, what: str, buffer: list, max_n: int, send: Any) -> None:
        """Send ``buffer`` in MLflow-sized chunks, removing each chunk once sent."""
        while buffer:
            batch = next(lim.chunks(buffer, max_n, lambda item: 64 + len(str(item))))
            self._send(what, len(batch), lambda b=batch: send(b))
            del buffer[: len(batch)]

    def _send(self, what: str, count: int, call: Any) -> None:
        """Run one request; transient failures raise ``_Transient``, rejections are logged
        (with what is dropped) and swallowed so the rest of the buffer still goes."""
        try:
            call()
        except Exception as e:
            if _is_transient(e):
                raise _Transient(f"{type(e).__name__}: {str(e)[:300]}") from e
            logger.error("MLflow rejected %d %s for run %s; dropping them: %s",
                         count, what, self.run_id, str(e)[:500])

    def _upload(self, art: _Artifact) -> None:
        if art.kind == "text":
            self.client.log_text(self.run_id, art.text or "", art.name)
        else:
            self.client.log_artifact(self.run_id, art.name, art.artifact_path)

    def _warn_down(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_warn < self.policy.warn_every_s:
            return
        self._last_warn = now
        logger.warning("MLflow %s unreachable (%s); holding for run %s: %s; will retry",
                       self.tracking_uri, reason, self.run_id, self._pending_text())

    def _recovered(self) -> None:
        if self._down_since is not None:
            logger.info("MLflow %s reachable again after %.0f s; buffered data of run %s sent",
                        self.tracking_uri, time.monotonic() - self._down_since, self.run_id)
        self._down_since = None
        self._backoff = self.policy.backoff_initial_s
        self._next_try = 0.0

    def _pending_text(self) -> str:
        parts = [f"{n} {k}" for k, n in self.pending.items()]
        if self._status is not None:
            parts.append(f"status {self._status}")
        return ", ".join(parts)

    def _give_up(self) -> None:
        """``finish`` could not deliver: spill the buffer (if configured) and say so loudly."""
        where = "not kept (no spill_dir)"
        if self.spill_dir is not None:
            path = self.spill_dir / f"{self.run_id}.pending.json"
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self._spill_state()))
            where = f"written to {path} (deliver with replay_spilled)"
        logger.error("MLflow %s unreachable at finish of run %s; undelivered: %s; %s",
                     self.tracking_uri, self.run_id, self._pending_text(), where)

    def _spill_state(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id,
                "status": self._status, "metrics": self._metrics, "params": self._params,
                "tags": self._tags, "artifacts": [asdict(a) for a in self._artifacts]}

    @classmethod
    def _from_spill(cls, state: Mapping[str, Any], client_or_uri: MlflowClient | str | None,
                    policy: RetryPolicy | None) -> RunLogger:
        log = cls(client_or_uri or state["tracking_uri"], state["run_id"], policy=policy)
        log._metrics = [tuple(m) for m in state["metrics"]]  # type: ignore[misc]
        log._params = [tuple(p) for p in state["params"]]  # type: ignore[misc]
        log._tags = [tuple(t) for t in state["tags"]]  # type: ignore[misc]
        log._artifacts = [_Artifact(**a) for a in state["artifacts"]]
        log._status = state["status"]
        log._finished = True
        return log


def replay_spilled(spill_dir: Path, client_or_uri: MlflowClient | str | None = None, *,
                   wait_s: float = 30.0, policy: RetryPolicy | None = None) -> int:
    """Deliver what loggers wrote to ``spill_dir`` at a failed ``finish`` (to the recorded
    tracking URI unless ``client_or_uri`` is given); files delivered are removed.
    Returns the number of runs fully delivered."""
    delivered = 0
    for path in sorted(Path(spill_dir).glob("*.pending.json")):
        log = RunLogger._from_spill(json.loads(path.read_text()), client_or_uri, policy)
        if log.flush(wait_s=wait_s):
            path.unlink()
            delivered += 1
        else:
            path.write_text(json.dumps(log._spill_state()))
    return delivered
