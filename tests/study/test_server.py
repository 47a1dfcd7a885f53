"""The managed MLflow server: start, reuse, stop, status, stable URL across restarts."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from study import server
from study.server import ServerError, ServerInfo, ensure_server, server_status, stop_server
from study.tracking import _proc as proc


def test_shared_server_answers_on_loopback(mlflow_server: str) -> None:
    assert mlflow_server.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{mlflow_server}/health", timeout=5) as resp:
        assert resp.status == 200


def test_lifecycle_start_reuse_stop(tmp_path: Path) -> None:
    """A second ensure reuses (same pid); stop ends the whole process group; status says so.
    (Restarting on the same port is checked with a logger in test_tracking.)"""
    assert server_status(tmp_path).state == "stopped"
    first = ensure_server(tmp_path, timeout_s=180)
    try:
        assert not first.reused and first.host == "127.0.0.1"
        assert first.backend_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
        assert first.artifacts_dir == tmp_path.resolve() / "mlflow" / "artifacts"
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
        assert first.store == "sqlite" and first.workers == 1 and first.auth is None
        # idle connections kept 120 s, not uvicorn's 5 s (stale-connection races under load)
        assert "--timeout-keep-alive 120" in proc.cmdline(first.pid)
        record = json.loads((tmp_path / "mlflow" / "server.json").read_text())
        assert record["pid"] == first.pid and record["url"] == first.url
        # Detached: its own session, so it outlives the launcher that started it.
        assert proc.group_members(first.pid)

        again = ensure_server(tmp_path)
        assert again.reused and again.pid == first.pid and again.url == first.url
        status = server_status(tmp_path)
        assert status.state == "running" and status.info and status.info.pid == first.pid

        assert stop_server(tmp_path) is True
        assert proc.group_members(first.pid) == []
        assert not proc.healthy(first.url, timeout_s=1)
        assert server_status(tmp_path).state == "stopped"
        assert stop_server(tmp_path) is False  # idempotent
        assert json.loads((tmp_path / "mlflow" / "server.json").read_text())["port"] == first.port
    finally:
        stop_server(tmp_path)
    assert server_status(tmp_path).state == "stopped"


def test_timeout_names_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"(?s)did not answer .*/health within .*server\.log"):
        ensure_server(tmp_path, timeout_s=0.5)
    record = json.loads((tmp_path / "mlflow" / "server.json").read_text())
    assert proc.group_members(record["pid"]) == []
    assert server_status(tmp_path).state == "stopped"


def test_explicit_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port}"):
            ensure_server(tmp_path, port=port)
    assert not (tmp_path / "mlflow" / "server.json").exists()


def test_stop_and_status_without_a_server(tmp_path: Path) -> None:
    assert stop_server(tmp_path / "nothing-here") is False
    assert not (tmp_path / "nothing-here").exists()
    status = server_status(tmp_path)
    assert status.state == "stopped" and status.info is None


def test_cli_status_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.main(["status", "--study-dir", str(tmp_path)]) == 3
    assert capsys.readouterr().out.startswith("stopped")
    assert server.main(["stop", "--study-dir", str(tmp_path)]) == 0
    assert "no MLflow server" in capsys.readouterr().out


def test_cli_start_reuses_and_status_reports_the_shared_server(
        mlflow_server_info: ServerInfo, capsys: pytest.CaptureFixture[str]) -> None:
    study_dir = mlflow_server_info.log_path.parents[1]
    assert server.main(["start", "--study-dir", str(study_dir)]) == 0
    assert f"already running: {mlflow_server_info.url}" in capsys.readouterr().out
    assert server.main(["status", "--study-dir", str(study_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "running" and out["server"]["pid"] == mlflow_server_info.pid


def test_exposed_server_allows_its_own_names_and_the_given_ones_only() -> None:
    """The Host headers an exposed server answers, checked with MLflow's own matcher."""
    from mlflow.server.security_utils import is_allowed_host_header

    from study.server import allowed_hosts

    assert allowed_hosts("127.0.0.1", ["mlflow.lab.org"]) == []   # loopback: MLflow's defaults
    v4 = allowed_hosts("203.0.113.7", ["MLflow.Lab.org"])          # a public bind address
    v6 = allowed_hosts("2001:db8::5")
    for allowed, host in [(v4, "203.0.113.7:5000"), (v4, "mlflow.lab.org:5000"),
                          (v4, "MLflow.Lab.org:5000"), (v4, "10.0.0.3:5000"),
                          (v4, "localhost:5000"), (v6, "[2001:db8::5]:5000")]:
        assert is_allowed_host_header(allowed, host), host
    for allowed, host in [(v4, "evil.example:5000"), (v4, "203.0.113.8:5000"),
                          (v6, "[2001:db8::6]:5000"), (v4, "mlflow.lab.org.evil.example")]:
        assert not is_allowed_host_header(allowed, host), host


def test_login_turns_mlflows_login_cache_on(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth config the server gets is read by MLflow itself with a 300 s login cache (a
    password hash per request otherwise: 2.9 requests/s at 8 trials, 22.7 with the cache);
    the password is in neither the file nor the command."""
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-long-password-123")
    paths = server._paths(tmp_path)
    env = server._auth_env(paths, "127.0.0.1", login=True)  # login on a loopback bind too
    assert server._auth_env(paths, "127.0.0.1") == {}  # off there unless asked
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", env["MLFLOW_AUTH_CONFIG_PATH"])
    config = read_auth_config()
    assert config.auth_cache_ttl_seconds == server.AUTH_CACHE_TTL_S == 300
    assert "a-long-password-123" not in paths.auth_config.read_text()
    assert (paths.auth_config.stat().st_mode & 0o777) == 0o600


def test_unknown_backend_store_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use sqlite, postgres or a SQLAlchemy URI"):
        ensure_server(tmp_path, backend="mysql-please")
    assert server_status(tmp_path).state == "stopped"


def test_cli_parses_store_options(tmp_path: Path) -> None:
    args = server._parse(["start", "--study-dir", str(tmp_path), "--backend-store-uri",
                          "postgres", "--artifacts-destination", "s3://bucket/tlstudy",
                          "--workers", "4", "--login"])
    assert (args.backend, args.artifacts, args.workers, args.login) == (
        "postgres", "s3://bucket/tlstudy", 4, True)
    with pytest.raises(SystemExit):
        server._parse(["start", "--workers", "0"])


def test_the_launcher_sizes_the_server_from_the_trials_it_can_run() -> None:
    from search_spaces import load_spec
    from study.launch import expected_concurrency

    spec = load_spec("smoke")
    cpus = spec.resources.cpus
    assert expected_concurrency(spec, {"CPU": 64 * cpus, "GPU": 0}) == 64
    assert expected_concurrency(spec, {"CPU": 0.5 * cpus}) == 1
    assert server.workers_for(expected_concurrency(spec, {"CPU": 64 * cpus}), cpus=4) == 4
