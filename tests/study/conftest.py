"""Study fixtures: one real MLflow tracking server for the whole test session.

``mlflow_server`` yields the tracking URI (``http://127.0.0.1:<free port>``) of a real
``mlflow server`` with its SQLite store and artifacts under a session tmp dir. Starting one
takes 10-20 s on two cores, so it is shared: tests make their own experiment
(``experiment_for(client, <unique name>)``) instead of a server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from study.server import ServerInfo, ensure_server, stop_server


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
