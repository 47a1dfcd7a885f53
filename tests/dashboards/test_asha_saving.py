"""ASHA's saving: counted in epochs over ended search runs, priced at measured epoch times."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from dashboards.search_view import compute_cost


def _runs(rows: list[dict]) -> SimpleNamespace:
    searches = pd.DataFrame(rows)
    searches["variant"], searches["wall_time_s"] = "FE", searches["duration_s"]
    spec = {"resources": {"cpus": 1, "gpus": 0}, "search": {"asha": {"max_epochs": 9}}}
    return SimpleNamespace(spec=spec, searches=searches, evaluations=pd.DataFrame())


def test_saving_counts_epochs_of_ended_runs_and_prices_them_at_measured_epoch_times():
    runs = _runs([
        # 30 s of fixed cost each: duration ÷ epochs would overprice the saving
        {"status": "KILLED", "stop_reason": "pruned", "epoch": 1, "epoch_time_s": 10.0,
         "duration_s": 40.0},
        {"status": "KILLED", "stop_reason": "pruned", "epoch": 3, "epoch_time_s": 10.0,
         "duration_s": 60.0},
        {"status": "FINISHED", "stop_reason": "budget", "epoch": 9, "epoch_time_s": 10.0,
         "duration_s": 120.0},
        # still running: its epochs are not final, it counts for nothing yet
        {"status": "RUNNING", "stop_reason": "", "epoch": 2, "epoch_time_s": 10.0,
         "duration_s": math.nan},
    ])
    row = compute_cost(runs).set_index("phase").loc["search"]
    assert row.asha_saved_pct == pytest.approx(100 * (1 - 13 / 27))
    assert row.asha_saved_hours == pytest.approx((8 + 6) * 10.0 / 3600)


def test_without_measured_epoch_times_the_training_seconds_per_epoch_are_used():
    runs = _runs([{"status": "KILLED", "stop_reason": "pruned", "epoch": 3,
                   "epoch_time_s": math.nan, "duration_s": 30.0}])
    row = compute_cost(runs).set_index("phase").loc["search"]
    assert row.asha_saved_hours == pytest.approx(6 * 10.0 / 3600)
    assert row.asha_saved_pct == pytest.approx(100 * 6 / 9)
