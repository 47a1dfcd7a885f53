"""Shared fixtures, each started on first use and shared by the whole session: a real local
Ray, and one real MLflow tracking server on a free loopback port (starting one takes 10-20 s
on two cores, so tests make their own experiments instead of servers)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from study.server import ServerInfo, ensure_server, stop_server

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A real single-node Ray on this machine's cores, no dashboard."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """The session-wide real MLflow server (its study dir is ``info.log_path.parents[1]``)."""
    study_dir = tmp_path_factory.mktemp("mlflow-session")
    info = ensure_server(study_dir, timeout_s=180)
    try:
        yield info
    finally:
        stop_server(study_dir)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_info: ServerInfo) -> str:
    """Tracking URI of the session-wide real MLflow server on a free loopback port."""
    return mlflow_server_info.url


@pytest.fixture
def mlflow_client(mlflow_server: str):
    """An ``MlflowClient`` bound to the session server."""
    from study.tracking import client_for

    return client_for(mlflow_server)
