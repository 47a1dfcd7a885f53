"""One request to an MLflow tracking server, and what its answer means for the data it carried.

``RunLogger`` decides what to do with a batch from the ``Answer`` alone:

* ``ok``        delivered;
* ``transient`` nothing wrong with the data, the server could not take it now: keep it, retry
                later (connection refused/reset/timed out, 5xx, 429, 408, and the HTTP 400 an
                MLflow server answers when its SQLAlchemy pool is exhausted — "QueuePool limit
                of size 5 overflow 10 reached, connection timed out" — or its database is
                locked or gone);
* ``refused``   401/403: the data is fine, the credentials are not; keep it (spilled at finish,
                replayable with the right login) and say what to set;
* ``rejected``  a definitive client error about the data itself (a changed param value, a bad
                key, a deleted run): sending it again cannot succeed.

Requests go out once (no retries inside: ``max_retries=0``) so that the logger's own backoff
and buffering are the only policy, and a down server costs a refused connection, not MLflow's
minutes of built-in retries. One exception: a kept-alive connection that the server closed
just as the request left ("Connection aborted", no answer) is retried once at once on a new
connection (counted in ``Sender.reconnects``) — a race of idle connections, not a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["ok", "transient", "refused", "rejected"]

# MLflow error codes (``databricks_pb2.ErrorCode`` names) that say "try again".
TRANSIENT_ERROR_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED",
    "INTERNAL_ERROR", "DEADLINE_EXCEEDED", "ABORTED",
})
# Words of a 4xx answer that come from the store being busy, not from the data (lower case).
TRANSIENT_MARKERS = (
    "queuepool limit", "connection timed out", "timed out", "database is locked",
    "could not connect", "connection refused", "server closed the connection",
    "too many clients", "too many connections", "deadlock detected",
    "could not serialize access", "operationalerror", "connection reset",
    "terminating connection",
)


@dataclass(frozen=True)
class Answer:
    """What one request came back with: its ``verdict`` and a short ``detail`` for logs/tags."""

    verdict: Verdict
    detail: str = ""
    status: int | None = None  # HTTP status, None when no answer came


def classify(status: int, body: str) -> Answer:
    """The verdict on an HTTP answer ``status`` with text ``body`` (MLflow's JSON error)."""
    if 200 <= status < 300:
        return Answer("ok", status=status)
    code, message = "", body
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            code = str(parsed.get("error_code", ""))
            message = str(parsed.get("message", body))
    except ValueError:
        pass
    detail = f"HTTP {status}{' ' + code if code else ''}: {message.strip()[:300]}"
    if status >= 500 or status in (408, 429) or code in TRANSIENT_ERROR_CODES:
        return Answer("transient", detail, status)
    if status in (401, 403):
        return Answer("refused", detail, status)
    lowered = message.lower()
    if any(marker in lowered for marker in TRANSIENT_MARKERS):
        return Answer("transient", detail, status)
    return Answer("rejected", detail, status)


def classify_exception(e: BaseException) -> Answer:
    """The verdict on an exception from the MLflow client (artifact uploads, non-HTTP stores)
    or from the transport (no answer at all: transient)."""
    from mlflow.exceptions import MlflowException, RestException

    text = f"{type(e).__name__}: {str(e)[:300]}"
    if isinstance(e, RestException | MlflowException):
        status = e.get_http_status_code()
        if isinstance(e, RestException) or "API request to" not in str(e):
            answer = classify(status, json.dumps({"error_code": e.error_code,
                                                  "message": e.message}))
            return Answer(answer.verdict, text, status)
        return Answer("transient", text)  # the request got no answer (refused, reset, timeout)
    if isinstance(e, OSError | TimeoutError | ConnectionError):
        return Answer("transient", text)
    return Answer("rejected", text)


class Sender:
    """Posts MLflow REST calls (JSON) to one tracking server: one try each, bounded in time.

    ``connect_timeout_s`` bounds reaching the server (a down host), ``read_timeout_s`` waiting
    for the answer (a loaded server takes seconds; a hung one is given up on). Credentials are
    MLflow's usual ones (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, a token), read when built.
    """

    def __init__(self, tracking_uri: str, *, connect_timeout_s: float = 2.0,
                 read_timeout_s: float = 60.0) -> None:
        from mlflow.utils.credentials import get_default_host_creds

        self.tracking_uri = tracking_uri
        self._creds = get_default_host_creds(tracking_uri)
        self._timeout = (connect_timeout_s, read_timeout_s)
        self.reconnects = 0  # requests sent again after a stale kept-alive connection

    def post(self, endpoint: str, body: dict[str, Any]) -> Answer:
        """POST ``body`` to ``/api/2.0/mlflow/<endpoint>`` and classify the answer."""
        from mlflow.exceptions import InvalidUrlException
        from mlflow.utils.rest_utils import http_request

        for attempt in (0, 1):
            try:
                response = http_request(
                    self._creds, f"/api/2.0/mlflow/{endpoint}", "POST", max_retries=0,
                    backoff_factor=0, timeout=self._timeout, raise_on_status=False, json=body)
            except InvalidUrlException as e:
                return Answer("refused", f"invalid tracking URI {self.tracking_uri}: {e}")
            except Exception as e:  # noqa: BLE001 - no answer: refused, reset, timed out
                if attempt == 0 and _stale_connection(e):
                    self.reconnects += 1
                    continue
                return Answer("transient", f"{type(e).__name__}: {str(e)[:300]}")
            return classify(response.status_code, response.text)
        raise AssertionError("unreachable")  # pragma: no cover


def _stale_connection(e: BaseException) -> bool:
    """The server closed a kept-alive connection as the request went out (no answer at all;
    a refused connection or a timeout is not this)."""
    text = str(e)
    return "RemoteDisconnected" in text or ("Connection aborted" in text
                                            and "timed out" not in text)


def log_batch_body(run_id: str, metrics: list[tuple[str, float, int, int]],
                   params: list[tuple[str, str]], tags: list[tuple[str, str]]) -> dict[str, Any]:
    """The JSON of a ``runs/log-batch`` request, encoded as MLflow's own client does (NaN and
    infinities as MLflow's protobuf JSON writes them)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json

    message = LogBatch(
        run_id=run_id,
        metrics=[Metric(k, v, t, s).to_proto() for k, v, t, s in metrics],
        params=[Param(k, v).to_proto() for k, v in params],
        tags=[RunTag(k, v).to_proto() for k, v in tags])
    return json.loads(message_to_json(message))


def update_run_body(run_id: str, status: str, end_time_ms: int) -> dict[str, Any]:
    """The JSON of a ``runs/update`` request ending a run with ``status``."""
    return {"run_id": run_id, "run_uuid": run_id, "status": status, "end_time": end_time_ms}
