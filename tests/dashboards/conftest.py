"""Dashboard fixtures: a study with known values logged to the real MLflow server, and its
report built once per session.

The MLflow server fixtures live in ``tests/study/conftest.py``; they are imported here so the
dashboard tests can run on their own (when both folders run, pytest starts one server per
folder: move the fixtures to ``tests/conftest.py`` to share one).
"""

from __future__ import annotations

import uuid

import pytest

from tests.study.conftest import mlflow_client, mlflow_server, mlflow_server_info  # noqa: F401

from .known_study import log_known_study


@pytest.fixture(scope="session")
def known_study(mlflow_server):  # noqa: F811
    """(study name, parent run id) of the known-values study on the session server."""
    from study.tracking import client_for

    name = f"known-{uuid.uuid4().hex[:8]}"
    parent = log_known_study(client_for(mlflow_server), name)
    return name, parent


@pytest.fixture(scope="session")
def known_report(known_study, mlflow_server, tmp_path_factory):  # noqa: F811
    """The report of the known study (2,000 bootstrap resamples), logged to its parent."""
    from dashboards.report import ReportConfig, make_report

    name, _ = known_study
    out = tmp_path_factory.mktemp("report")
    return make_report(ReportConfig(study=name, tracking_uri=mlflow_server, out_dir=out))
