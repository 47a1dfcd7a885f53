"""The load test itself, small: simulated trials through the trial logger against the managed
server on the folder's PostgreSQL with login on; every history must arrive (no timing is
asserted — bench/tracking_load.py prints the figures)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from study.tracking import _postgres as pg

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("tracking_load", ROOT / "bench" /
                                                  "tracking_load.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.setdefault("tracking_load", module)  # (dataclasses look their module up)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_load_config_is_bounded() -> None:
    bench = _bench()
    ok = dict(store="sqlite", login=False, trials=8, epochs=20, metrics=6, pace_s=1.0,
              workers=1, max_seconds=600)
    bench.LoadConfig(**ok)
    for bad in ({"trials": 129}, {"epochs": 0}, {"max_seconds": 5000}, {"store": "mysql"}):
        with pytest.raises(ValueError):
            bench.LoadConfig(**{**ok, **bad})


@pytest.mark.slow
def test_small_load_on_postgres_with_login_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 trials × 5 epochs, flat out, PostgreSQL + login on 127.0.0.1: all FINISHED with their
    whole history, nothing dropped or spilled (about 1-2 min, mostly server start)."""
    try:
        pg.bin_dir()
    except pg.PostgresError as e:
        pytest.skip(str(e))
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_POOL_MAXSIZE"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # restored after the test
    bench = _bench()
    cfg = bench.LoadConfig(store="postgres", login=True, trials=8, epochs=5, metrics=6,
                           pace_s=0.0, workers=1, max_seconds=300)
    result = bench.run_load(cfg)
    assert result["server"]["login"] and result["server"]["store"] == "postgres"
    assert result["runs_complete"] == 8 and result["runs_started"] == 8
    assert result["entries_dropped"] == 0 and result["runs_spilled"] == 0
    assert result["threads_hung"] == 0
