"""The managed MLflow server listens on loopback only; exposing it turns on MLflow's login.

Real servers: the session's (loopback) and one bound to 0.0.0.0 with credentials from the
environment. The credentials appear nowhere the study writes: not in ``server.log`` (which
holds the server's command line), ``server.json``, ``basic_auth.ini``, the process's command
line, or the params/tags of a run logged through the server.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
from pathlib import Path

import pytest

from study.server import ServerError, ensure_server, own_addresses, server_status, stop_server
from tests.reliability._net import LOOPBACK, http_status, listening
from tests.reliability._tally import tally

CRED_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "TLSTUDY_MLFLOW_CREDENTIALS")


def _status(url: str, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    headers = {}
    if host is not None:  # the name a client used to reach the server
        headers["Host"] = host
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return http_status(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers)


def test_managed_server_binds_loopback_only(mlflow_server_info):
    record = json.loads((mlflow_server_info.log_path.parent / "server.json").read_text())
    assert record["host"] == "127.0.0.1" and record["url"].startswith("http://127.0.0.1:")
    assert record.get("auth") is None
    addrs = listening(mlflow_server_info.port)
    assert addrs, "no listening socket found for the server's port"
    assert set(addrs) == {LOOPBACK}  # 127.0.0.1 only
    tally["security: servers checked bound to 127.0.0.1"] += 1


def test_exposed_bind_without_credentials_is_refused_before_starting(tmp_path, monkeypatch):
    for var in CRED_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ServerError, match="MLFLOW_TRACKING_USERNAME"):
        ensure_server(tmp_path, host="0.0.0.0", timeout_s=5)
    assert not (tmp_path / "mlflow" / "server.json").exists()
    assert server_status(tmp_path).state == "stopped"
    bad = tmp_path / "creds"
    bad.write_text("no-colon-here\n")
    monkeypatch.setenv("TLSTUDY_MLFLOW_CREDENTIALS", str(bad))
    with pytest.raises(ServerError, match="username:password"):
        ensure_server(tmp_path, host="0.0.0.0", timeout_s=5)
    bad.write_text("user:short\n")
    with pytest.raises(ServerError, match="12 characters"):
        ensure_server(tmp_path, host="0.0.0.0", timeout_s=5)
    tally["security: exposed binds refused without valid credentials"] += 3


def test_exposed_server_requires_login_and_keeps_credentials_secret(tmp_path, monkeypatch):
    from study.tracking import client_for

    user, password = "tlstudy-admin", "pw-" + secrets.token_urlsafe(18)
    for var in CRED_VARS:
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "mlflow-credentials"
    creds.write_text(f"{user}:{password}\n")
    creds.chmod(0o600)
    monkeypatch.setenv("TLSTUDY_MLFLOW_CREDENTIALS", str(creds))
    study = tmp_path / "study"
    info = ensure_server(study, host="0.0.0.0", timeout_s=180,
                         extra_hosts=("mlflow.lab.example",))
    try:
        assert info.auth == "basic-auth"
        assert set(listening(info.port)) == {"00000000"}  # exposed, as asked
        url = f"http://127.0.0.1:{info.port}"
        assert _status(url) == 401
        assert _status(url, (user, "wrong-password-123")) == 401
        assert _status(url, (user, password)) == 200
        # from another host: through this machine's network address, and by a DNS name the
        # server was told about; a name it was not told about is refused (DNS rebinding guard)
        address = next(a for a in own_addresses()
                       if ":" not in a and not ipaddress.ip_address(a).is_loopback)
        remote = f"http://{address}:{info.port}"
        assert _status(remote) == 401
        assert _status(remote, (user, password)) == 200
        assert _status(remote, (user, password), host=f"mlflow.lab.example:{info.port}") == 200
        assert _status(remote, (user, password), host=f"evil.example:{info.port}") == 403
        tally["security: exposed MLflow reached from the network (login, Host guard)"] += 1
        # clients (launcher, trials) log in with MLflow's standard variables
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = client_for(url)
        exp = client.create_experiment("auth-check")
        run = client.create_run(exp, tags={"phase": "search"})
        client.log_param(run.info.run_id, "base_lr", 0.01)
        client.set_terminated(run.info.run_id)
        got = client.get_run(run.info.run_id)
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    finally:
        stop_server(study)
    assert not socket_is_open(info.port)  # stopped
    root = study / "mlflow"
    secrets_seen = {
        "server.log": (root / "server.log").read_text(errors="replace"),
        "server.json": (root / "server.json").read_text(),
        "basic_auth.ini": (root / "basic_auth.ini").read_text(),
        "command line": cmdline.decode(errors="replace"),
        "run params/tags": json.dumps([got.data.params, got.data.tags]),
    }
    assert "--app-name basic-auth" in secrets_seen["command line"]
    assert oct((root / "basic_auth.ini").stat().st_mode & 0o777) == "0o600"
    leaks = [where for where, text in secrets_seen.items() if password in text]
    assert not leaks
    tally["security: places scanned for the MLflow password"] += len(secrets_seen)
    tally["security: MLflow password found in logs/records/params/tags"] += len(leaks)


def socket_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_changed_admin_password_is_named_at_start_and_can_be_rotated(tmp_path, monkeypatch):
    """MLflow keeps the first start's admin password; a restart with another one is refused
    with a message saying where and how to change it, and the documented change works."""
    for var in CRED_VARS:
        monkeypatch.delenv(var, raising=False)
    user, first, second = "tlstudy-admin", "pw-" + secrets.token_urlsafe(18), \
        "pw-" + secrets.token_urlsafe(18)
    study = tmp_path / "study"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", first)
    ensure_server(study, host="0.0.0.0", timeout_s=180)
    stop_server(study)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", second)
    try:
        with pytest.raises(ServerError, match=r"refuses the credentials .*basic_auth\.db"):
            ensure_server(study, host="0.0.0.0", timeout_s=180)
        # the rotation the message (and the README) describe, as the old admin
        from mlflow.server import get_app_client

        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", first)
        running = server_status(study).info
        assert running is not None  # left running: refused logins harm no one
        url = f"http://127.0.0.1:{running.port}"
        get_app_client("basic-auth", tracking_uri=url).update_user_password(
            user, second, current_password=first)
        assert _status(url, (user, first)) == 401
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", second)
        again = ensure_server(study, host="0.0.0.0", timeout_s=180)   # reused, login checked
        assert again.reused and _status(url, (user, second)) == 200
    finally:
        stop_server(study)
    tally["security: admin password rotated (old refused, new accepted)"] += 1
