"""Dashboard fixtures: a study with known values logged to the real MLflow server, and its
report built once per session.

The MLflow server fixtures live in ``tests/conftest.py`` (one server for the whole session).
"""

from __future__ import annotations

import uuid

import pytest

from .known_study import log_known_study


@pytest.fixture(scope="session")
def known_study(mlflow_server):
    """(study name, parent run id) of the known-values study on the session server."""
    from study.tracking import client_for

    name = f"known-{uuid.uuid4().hex[:8]}"
    parent = log_known_study(client_for(mlflow_server), name)
    return name, parent


@pytest.fixture(scope="session")
def known_report(known_study, mlflow_server, tmp_path_factory):
    """The report of the known study (2,000 bootstrap resamples), logged to its parent."""
    from dashboards.report import ReportConfig, make_report

    name, _ = known_study
    out = tmp_path_factory.mktemp("report")
    return make_report(ReportConfig(study=name, tracking_uri=mlflow_server, out_dir=out))
