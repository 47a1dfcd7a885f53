"""The MLflow login trials use, carried from the driver to every node through Ray.

A trial on another machine must log in to the study's MLflow server (basic-auth is on whenever
the server binds a non-loopback address). The driver reads the login once — from
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or the 0600 file named by
``TLSTUDY_MLFLOW_CREDENTIALS`` (``study.server.credentials_from_env``) — and hands it to the
trials inside their ``TrialContext`` (Ray's object store), so a worker node needs no file, no
variable and no shell profile of its own. The password is never put on a command line, in a
runtime_env (shown by the dashboard and ``ray job`` commands), in a log, a param or a tag: its
``repr`` is masked and the trial sets it in its own process environment only, where MLflow's
client reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

USER_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"


@dataclass(frozen=True)
class MlflowLogin:
    """A basic-auth login for the study's MLflow server (``repr`` shows the user only)."""

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise ValueError("an MLflow login needs a username and a password")

    def apply(self) -> None:
        """Make this process's MLflow clients log in with it (MLflow reads these variables at
        each request). Only this process's environment changes; nothing is printed."""
        os.environ[USER_ENV] = self.username
        os.environ[PASSWORD_ENV] = self.password


def driver_login() -> MlflowLogin | None:
    """The login the driver has (variables or ``TLSTUDY_MLFLOW_CREDENTIALS``), or None.

    Raises ``study.server.ServerError`` when the credentials file is named but unreadable."""
    from study.server import credentials_from_env

    creds = credentials_from_env()
    return None if creds is None else MlflowLogin(*creds)
