"""The Ray dashboard as ``ray_cluster.yaml`` starts it on the head: bound to 127.0.0.1 and behind
Ray's token authentication, with the token made by the command ``--cluster`` runs
(``ray get-auth-token --generate``), read from a file, never written to Ray's logs.

A real Ray head (with its dashboard and job server) in a process of its own, with a home folder
of its own: the session's Ray and the user's ``~/.ray`` are untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from study.cluster import PROJECT_ROOT, TOKEN_FILE
from tests._ray_nodes import quiet_port
from tests.reliability._net import LOOPBACK, http_status, listening
from tests.reliability._tally import tally

HEAD = textwrap.dedent("""
    import json, sys, time
    import ray
    port = int(sys.argv[1])
    ray.init(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, configure_logging=False)
    print(json.dumps({"session": ray._private.worker.global_worker.node.get_session_dir_path()}),
          flush=True)
    while True:
        time.sleep(1)
""")


def _get(url: str, token: str | None = None) -> int:
    return http_status(url, {"Authorization": f"Bearer {token}"} if token is not None else {})


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head with token auth on, as the shipped config's head_start_ray_commands run it."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_AUTH_MODE="token")
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True, timeout=120)
    token_file = home / Path(TOKEN_FILE).relative_to("~")
    token = token_file.read_text().strip()
    port = quiet_port()
    script = home / "head.py"
    script.write_text(HEAD)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        session = Path(json.loads(line)["session"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _get(f"{url}/api/version", token) != 200:
            assert time.monotonic() < deadline, "the dashboard did not come up"
            time.sleep(1)
        yield {"url": url, "port": port, "token": token, "token_file": token_file,
               "session": session, "env": env, "ray": ray}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_shipped_head_starts_ray_the_way_this_test_does():
    config = yaml.safe_load((PROJECT_ROOT / "ray_cluster.yaml").read_text())
    start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in start
    assert "--dashboard-host=127.0.0.1" in start
    assert config["file_mounts"][TOKEN_FILE] == TOKEN_FILE     # the token this test makes


def test_ray_dashboard_binds_loopback_only(head):
    addresses = listening(head["port"])
    assert addresses and set(addresses) == {LOOPBACK}, addresses
    tally["Ray dashboard listening sockets checked (loopback only)"] += len(addresses)


def test_ray_dashboard_and_job_api_require_the_token(head):
    url, token = head["url"], head["token"]
    assert len(token) >= 32
    refused = {path: (_get(url + path), _get(url + path, "not-the-token"))
               for path in ("/api/version", "/api/jobs/", "/nodes?view=summary")}
    for path, (none, wrong) in refused.items():
        assert none == 401, (path, none)        # no token
        assert wrong == 403, (path, wrong)      # a wrong one
        assert _get(url + path, token) == 200, path
    tally["Ray dashboard requests without / with a wrong token refused"] += 2 * len(refused)
    # `ray job list` (what `--cluster` uses: job submit/logs/stop) with the token from its file,
    # and without one
    ok = subprocess.run([head["ray"], "job", "list", "--address", url], env=head["env"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    alien = {**head["env"], "HOME": str(head["token_file"].parent.parent / "elsewhere")}
    no = subprocess.run([head["ray"], "job", "list", "--address", url], env=alien,
                        capture_output=True, text=True, timeout=120)
    assert no.returncode != 0
    assert "401" in no.stderr + no.stdout or "token" in (no.stderr + no.stdout).lower()


def test_ray_token_is_in_no_log(head):
    token = head["token"].encode()
    scanned = 0
    for f in head["session"].rglob("*"):
        if f.is_file() and not f.is_symlink() and f.stat().st_size < 50_000_000:
            scanned += 1
            assert token not in f.read_bytes(), f
    assert scanned > 10
    tally["Ray session files scanned for the token (found in none)"] += scanned
