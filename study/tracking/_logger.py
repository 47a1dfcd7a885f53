"""``RunLogger``: batched, buffering, retrying logging into one MLflow run.

Why not ``mlflow.log_metric`` or Ray's ``MLflowLoggerCallback``: both send one HTTP request per
value, and both raise (after MLflow's own retries, minutes) when the server is away, which
would either stall or kill a trial. Here everything goes into a buffer first and leaves in
``log-batch`` requests inside MLflow's limits — params, tags and metrics together, so a trial's
epoch costs one request — each sent once (``study.tracking._send``), with the logger's own
exponential backoff between attempts. What the server answers decides (``Answer.verdict``):

* transient (no answer, 5xx, 429, the HTTP 400 of an exhausted SQLAlchemy pool): kept in the
  buffer and sent again later; a per-epoch ``flush`` makes one try and, while the server is in
  backoff, none (a down server costs training no time, and no health probe is sent per flush);
* refused (401/403: the login, not the data): kept, said once with what to set;
* rejected (a definitive client error about the data: a changed param value, a deleted run):
  the batch is split in halves until the offending entries are alone, so only they are dropped;
  each drop is logged, written to ``<spill_dir>/<run_id>.rejected.jsonl`` and summarised in the
  run's ``logging_errors`` tag, which the report reads.

A logger that cannot deliver at ``finish`` writes its buffer to ``spill_dir`` (by default
``default_spill_dir()``) for ``replay_spilled`` to deliver later: nothing is dropped silently.

Re-sending after a lost reply is harmless: the SQL store drops duplicate metric rows (same key,
step, timestamp, value), and re-logging a param with the same value is accepted.

A logger pickles to (tracking URI, run id, buffer, policy) — the MLflow client is rebuilt on
first use — so it can be handed to a Ray trial. It is not thread-safe.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from mlflow.tracking import MlflowClient

from study.tracking import _limits as lim
from study.tracking._send import (
    Answer,
    Sender,
    classify_exception,
    log_batch_body,
    update_run_body,
)

logger = logging.getLogger(__name__)

TerminalStatus = Literal["FINISHED", "FAILED", "KILLED"]
_TERMINAL = ("FINISHED", "FAILED", "KILLED")
LOGGING_ERRORS_TAG = "logging_errors"
MAX_ENTITIES_PER_BATCH = 1000  # MLflow: params + tags + metrics of one log-batch request
_Metric = tuple[str, float, int, int]  # (key, value, timestamp_ms, step)


def default_spill_dir() -> Path:
    """Where loggers spill what they could not deliver when given no ``spill_dir``: this
    machine's temp folder (``$TMPDIR/tlstudy-mlflow-spill``), replayed by ``replay_spilled``
    at the end of a study and by the next trial on the same machine."""
    return Path(tempfile.gettempdir()) / "tlstudy-mlflow-spill"


@dataclass(frozen=True)
class RetryPolicy:
    """When a ``RunLogger`` sends, and how long it waits for an unreachable server.

    ``flush_every`` buffered metrics, or ``flush_interval_s`` seconds since the last send,
    trigger a send from ``metrics()`` (one attempt, no waiting: training goes on). ``flush()``
    retries for up to ``flush_wait_s`` seconds (default 0: one attempt, so a per-epoch flush
    never stalls training, and none while backing off), ``finish()`` for up to
    ``finish_wait_s``; waits between attempts grow from ``backoff_initial_s`` to
    ``backoff_max_s``. ``probe_timeout_s`` bounds connecting to the server,
    ``request_timeout_s`` waiting for its answer; ``warn_every_s`` rate-limits the "server
    unreachable" warning. ``send_interval_s``: a ``flush()`` not forced sends at most once per
    that many seconds (what comes meanwhile waits in the buffer for the next flush; 0: every
    flush sends) — a trial's epochs of a second each then cost the server a request per
    interval, not per epoch (:data:`TRIAL_POLICY`).
    """

    flush_every: int = 1000
    flush_interval_s: float = 30.0
    send_interval_s: float = 0.0
    flush_wait_s: float = 0.0
    finish_wait_s: float = 120.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    probe_timeout_s: float = 2.0
    request_timeout_s: float = 60.0
    warn_every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {self.flush_every}")
        for name in ("flush_interval_s", "send_interval_s", "flush_wait_s", "finish_wait_s",
                     "warn_every_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s, got "
                             f"{self.backoff_initial_s}, {self.backoff_max_s}")
        for name in ("probe_timeout_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


#: A trial's logger: epochs leave at most every 2 s (each epoch at which the trial may end —
#: an ASHA rung, its last — at once: ``flush(force=True)``; see ``study.phases._trial``).
TRIAL_POLICY = RetryPolicy(send_interval_s=2.0)


@dataclass(frozen=True)
class _Artifact:
    """A pending artifact: JSON text to write as ``name``, or a local file to upload."""

    kind: Literal["text", "file"]
    name: str  # artifact file name (text) or local path (file)
    artifact_path: str | None = None
    text: str | None = None


class _Held(Exception):
    """Delivery stopped; what is left stays buffered. ``retry``: worth trying again soon
    (transient); False when the server refused the login (401/403)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.detail)
        self.retry = answer.verdict == "transient"


class RunLogger:
    """Buffered, batched, retrying logger for one MLflow run.

    Args:
        client_or_uri: an ``MlflowClient`` or a tracking URI.
        run_id: the run to log into (it stays RUNNING until ``finish``).
        policy: send/retry timing (see ``RetryPolicy``).
        spill_dir: where ``finish`` writes what it could not deliver (``<run_id>.pending.json``,
            for ``replay_spilled``) and where rejected entries are kept
            (``<run_id>.rejected.jsonl``); default ``default_spill_dir()``.

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
        self.spill_dir = Path(spill_dir) if spill_dir is not None else default_spill_dir()
        self._metrics: list[_Metric] = []
        self._params: list[tuple[str, str]] = []
        self._tags: list[tuple[str, str]] = []
        self._artifacts: list[_Artifact] = []
        self._status: TerminalStatus | None = None  # requested terminal status not yet sent
        self._finished = False
        self.dropped: list[str] = []  # "kind key: why" of each entry the server rejected
        self.requests = 0  # requests sent (delivery attempts included)
        self.failed_requests = 0  # of which not accepted (transient, refused, rejected)
        self.request_s: list[float] = []  # each log-batch/update request's duration, seconds
        self._sender: Sender | None = None
        self._reset_timers()

    # ------------------------------------------------------------ pickling

    def _reset_timers(self) -> None:
        self._last_send = time.monotonic()
        self._last_flush = float("-inf")  # the last flush() that sent (send_interval_s)
        self._next_try = 0.0
        self._backoff = self.policy.backoff_initial_s
        self._down_since: float | None = None
        self._last_warn = float("-inf")
        self._refused_said = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_client", "_sender", "_last_send", "_last_flush", "_next_try",
                             "_backoff",
                             "_down_since", "_last_warn", "_refused_said", "request_s")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = None
        self._sender = None
        self.request_s = []
        self._reset_timers()

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (built from the tracking URI after unpickling)."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def _http(self) -> Sender | None:
        """The one-try REST sender for an http(s) tracking URI; None for other stores."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        if self._sender is None:
            self._sender = Sender(self.tracking_uri,
                                  connect_timeout_s=self.policy.probe_timeout_s,
                                  read_timeout_s=self.policy.request_timeout_s)
        return self._sender

    # ------------------------------------------------------------ buffering

    @property
    def reconnects(self) -> int:
        """Requests sent again at once after a stale kept-alive connection (``Sender``)."""
        return self._sender.reconnects if self._sender is not None else 0

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

    def flush(self, wait_s: float | None = None, *, force: bool = False) -> bool:
        """Send everything buffered, retrying for up to ``wait_s`` seconds (default
        ``policy.flush_wait_s``). True when nothing is left pending. With no wait, a server
        in backoff (it failed a moment ago) is not tried again before its time. Unless
        ``force``, nothing is sent within ``policy.send_interval_s`` of the last flush that
        sent."""
        wait = self.policy.flush_wait_s if wait_s is None else wait_s
        now = time.monotonic()
        if ((wait == 0 and now < self._next_try)
                or (not force and now - self._last_flush < self.policy.send_interval_s)):
            return not self._has_pending()
        self._last_flush = now
        return self._deliver(wait)

    def finish(self, status: TerminalStatus = "FINISHED", wait_s: float | None = None) -> bool:
        """Flush, then end the run with ``status``; retries for up to ``wait_s`` seconds
        (default ``policy.finish_wait_s``). Idempotent. True when all was delivered; False when
        the server stayed away — the buffer then goes to ``spill_dir``."""
        if status not in _TERMINAL:
            raise ValueError(f"status must be one of {_TERMINAL}, got {status!r}")
        if self._finished:
            return not self._has_pending()
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

    def _has_pending(self) -> bool:
        return self._status is not None or any(self.pending.values())

    def _deliver(self, wait_s: float) -> bool:
        """Attempt delivery until done or ``wait_s`` has passed; True when nothing is pending."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._attempt()
            except _Held as e:
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                delay = self._backoff
                self._backoff = min(2 * self._backoff, self.policy.backoff_max_s)
                self._next_try = now + delay
                if not e.retry:
                    self._say_refused(str(e))
                    return False
                if now + delay > deadline:
                    self._warn_down(str(e))
                    return False
                time.sleep(delay)
                continue
            self._recovered()
            return True

    def _attempt(self) -> None:
        """One pass over the buffer; raises ``_Held`` at the first failure that keeps data
        (what was sent before it is removed from the buffer)."""
        self._last_send = time.monotonic()
        while self._params or self._tags or self._metrics:
            params, tags, metrics = self._next_batch()
            self._send_entries(params, tags, metrics)
            del self._params[: len(params)]
            del self._tags[: len(tags)]
            del self._metrics[: len(metrics)]
        while self._artifacts:
            self._call(f"artifact {self._artifacts[0].name}",
                       lambda: self._upload(self._artifacts[0]))
            self._artifacts.pop(0)
        if self._status is not None:
            self._end_run(self._status)
            self._status = None

    def _next_batch(self) -> tuple[list, list, list]:
        """The buffer's next log-batch: leading params, tags and metrics within MLflow's limits
        (100 params, 100 tags, 1000 entities, ~1 MB)."""
        budget, room = lim.MAX_BATCH_BYTES, MAX_ENTITIES_PER_BATCH
        out: list[list] = []
        for buffer, max_n in ((self._params, lim.MAX_PARAMS_TAGS_PER_BATCH),
                              (self._tags, lim.MAX_PARAMS_TAGS_PER_BATCH),
                              (self._metrics, lim.MAX_METRICS_PER_BATCH)):
            taken: list = []
            for item in buffer[: min(max_n, room)]:
                size = 64 + len(str(item))
                if size > budget and room < MAX_ENTITIES_PER_BATCH:
                    break  # (an entry over the budget travels alone)
                taken.append(item)
                budget -= size
                room -= 1
            out.append(taken)
        return out[0], out[1], out[2]

    def _send_entries(self, params: list, tags: list, metrics: list) -> None:
        """Send one log-batch; on a definitive rejection, halve it until the rejected entries
        stand alone, and drop only those (recorded). Raises ``_Held`` when data must wait."""
        answer = self._log_batch(params, tags, metrics)
        if answer.verdict == "ok":
            return
        if answer.verdict != "rejected":
            raise _Held(answer)
        entries = ([("param", p) for p in params] + [("tag", t) for t in tags]
                   + [("metric", m) for m in metrics])
        whole_run = any(w in answer.detail for w in ("RESOURCE_DOES_NOT_EXIST", "lifecycle"))
        if len(entries) == 1 or whole_run:
            self._record_drop(entries, answer)
            return
        half = len(entries) // 2
        for part in (entries[:half], entries[half:]):
            self._send_entries([e for k, e in part if k == "param"],
                               [e for k, e in part if k == "tag"],
                               [e for k, e in part if k == "metric"])

    def _post(self, endpoint: str, body: dict[str, Any]) -> Answer:
        assert self._http is not None
        self.requests += 1
        started = time.monotonic()
        answer = self._http.post(endpoint, body)
        self.request_s.append(time.monotonic() - started)
        self.failed_requests += answer.verdict != "ok"
        return answer

    def _log_batch(self, params: list, tags: list, metrics: list) -> Answer:
        if self._http is not None:
            return self._post("runs/log-batch",
                              log_batch_body(self.run_id, metrics, params, tags))
        self.requests += 1
        from mlflow.entities import Metric, Param, RunTag

        try:
            self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in metrics],
                                  params=[Param(*p) for p in params],
                                  tags=[RunTag(*t) for t in tags])
        except Exception as e:  # noqa: BLE001 - classified: kept, or rejected and recorded
            return classify_exception(e)
        return Answer("ok")

    def _end_run(self, status: str) -> None:
        now_ms = int(time.time() * 1000)
        if self._http is not None:
            answer = self._post("runs/update", update_run_body(self.run_id, status, now_ms))
            if answer.verdict == "rejected":
                self._record_drop([("status", (status, ""))], answer)
            elif answer.verdict != "ok":
                raise _Held(answer)
            return
        self._call(f"status {status}",
                   lambda: self.client.set_terminated(self.run_id, status=status))

    def _call(self, what: str, call: Any) -> None:
        """Run one client call (artifacts, non-HTTP stores); a failure that keeps data raises
        ``_Held``, a rejection is recorded and the rest of the buffer still goes."""
        self.requests += 1
        try:
            call()
        except Exception as e:  # noqa: BLE001 - classified below
            answer = classify_exception(e)
            if answer.verdict != "rejected":
                raise _Held(answer) from e
            self._record_drop([("artifact", (what, ""))], answer)

    def _upload(self, art: _Artifact) -> None:
        if art.kind == "text":
            self.client.log_text(self.run_id, art.text or "", art.name)
        else:
            self.client.log_artifact(self.run_id, art.name, art.artifact_path)

    # ------------------------------------------------------------ what went wrong

    def _record_drop(self, entries: list[tuple[str, Any]], answer: Answer) -> None:
        """Entries the server rejected for good: logged, kept in ``<run>.rejected.jsonl``,
        and summarised in the run's ``logging_errors`` tag (sent with the next batch)."""
        keys = [f"{kind} {entry[0]}" for kind, entry in entries]
        summary = (f"{len(entries)} entries ({', '.join(keys[:3])}"
                   f"{', ...' if len(keys) > 3 else ''})" if len(keys) > 1 else keys[0])
        self.dropped.append(f"{summary}: {answer.detail}")
        logger.error("MLflow rejected %s for run %s; dropped (kept in %s): %s", summary,
                     self.run_id, self._rejected_path(), answer.detail)
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            with self._rejected_path().open("a") as f:
                for kind, entry in entries:
                    f.write(json.dumps({"kind": kind, "entry": list(entry),
                                        "answer": answer.detail}) + "\n")
        except OSError as e:
            logger.error("cannot keep rejected entries in %s: %s", self._rejected_path(), e)
        if any(kind == "tag" and entry[0] == LOGGING_ERRORS_TAG for kind, entry in entries):
            return  # the summary itself was rejected: the log line and file keep it
        self._tags = [t for t in self._tags if t[0] != LOGGING_ERRORS_TAG]
        self._tags.append((LOGGING_ERRORS_TAG,
                           lim.truncate(f"{len(self.dropped)} rejected: "
                                        + " | ".join(self.dropped), lim.MAX_TAG_VAL_LENGTH)))

    def _rejected_path(self) -> Path:
        return self.spill_dir / f"{self.run_id}.rejected.jsonl"

    def _say_refused(self, reason: str) -> None:
        if self._refused_said:
            return
        self._refused_said = True
        logger.error("MLflow %s refuses this client's login (%s); holding for run %s: %s. "
                     "Set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or "
                     "TLSTUDY_MLFLOW_CREDENTIALS); what cannot be sent is spilled at finish",
                     self.tracking_uri, reason, self.run_id, self._pending_text())

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
        """``finish`` could not deliver: spill the buffer and say so loudly."""
        path = self.spill_dir / f"{self.run_id}.pending.json"
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._spill_state()))
            tmp.replace(path)
            where = f"written to {path} (deliver with replay_spilled)"
        except OSError as e:
            where = f"NOT kept: cannot write {path} ({e})"
        logger.error("MLflow %s unreachable at finish of run %s; undelivered: %s; %s",
                     self.tracking_uri, self.run_id, self._pending_text(), where)

    def _spill_state(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id,
                "status": self._status, "metrics": self._metrics, "params": self._params,
                "tags": self._tags, "artifacts": [asdict(a) for a in self._artifacts]}

    @classmethod
    def _from_spill(cls, state: Mapping[str, Any], client_or_uri: MlflowClient | str | None,
                    policy: RetryPolicy | None, spill_dir: Path) -> RunLogger:
        log = cls(client_or_uri or state["tracking_uri"], state["run_id"], policy=policy,
                  spill_dir=spill_dir)
        log._metrics = [tuple(m) for m in state["metrics"]]  # type: ignore[misc]
        log._params = [tuple(p) for p in state["params"]]  # type: ignore[misc]
        log._tags = [tuple(t) for t in state["tags"]]  # type: ignore[misc]
        log._artifacts = [_Artifact(**a) for a in state["artifacts"]]
        log._status = state["status"]
        log._finished = True
        return log


def replay_spilled(spill_dir: Path | None = None,
                   client_or_uri: MlflowClient | str | None = None, *,
                   wait_s: float = 30.0, policy: RetryPolicy | None = None,
                   only_uri: str | None = None) -> int:
    """Deliver what loggers wrote to ``spill_dir`` (default ``default_spill_dir()``) at a
    failed ``finish`` (to the recorded tracking URI unless ``client_or_uri`` is given); files
    delivered are removed. ``only_uri``: replay only spills recorded for that tracking URI
    (others are left for their own study). Each file is claimed by renaming it first, so two
    processes replaying the same folder do not both send it. Returns the number of runs fully
    delivered."""
    folder = Path(spill_dir) if spill_dir is not None else default_spill_dir()
    delivered = 0
    for path in sorted(folder.glob("*.pending.json")) if folder.is_dir() else []:
        claimed = path.with_name(f"{path.name}.{os.getpid()}.replaying")
        try:
            state = json.loads(path.read_text())
            if only_uri is not None and state.get("tracking_uri") != only_uri:
                continue
            path.replace(claimed)
        except (OSError, ValueError):  # taken by another process meanwhile, or half-written
            continue
        log = RunLogger._from_spill(state, client_or_uri, policy, folder)
        if log.flush(wait_s=wait_s):
            claimed.unlink()
            delivered += 1
        else:
            claimed.write_text(json.dumps(log._spill_state()))
            claimed.replace(path)
    return delivered
