"""``python -m trainables.inspect``: the documented JSON and table.

Two tests run the module as users do (a subprocess, about 6 s of imports each); the others call
its ``main`` in-process with the same arguments.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.inspect import main

ROOT = Path(__file__).resolve().parents[2]
LITE0_BLOCKS = ["stem", *(f"stage{i}" for i in range(7)), "head_conv", "head"]


def run_inspect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainables.inspect", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_fted_json_lists_every_block_with_decaying_rates():
    proc = run_inspect("--backbone", "efficientnet_lite0", "--variant", "FTED", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["block"] for r in rows] == LITE0_BLOCKS
    for row in rows:
        assert list(row) == ["block", "params", "trainable", "lr_min", "lr_max"]
        assert row["trainable"] == row["params"] > 0
        assert 0 < row["lr_min"] <= row["lr_max"] <= 1e-3
    assert rows[-1]["lr_min"] == rows[-2]["lr_max"] == 1e-3  # head and last layer at t0
    assert rows[0]["lr_min"] == pytest.approx(1e-3 * math.exp(-3))  # paper's λ: e^-3 at input
    maxima = [r["lr_max"] for r in rows]
    assert maxima == sorted(maxima)


def test_options_reach_the_table(capsys):
    assert main(["--variant", "2FT", "--base-lr", "0.01", "--input-size", "64", "--json"]) == 0
    rows = {r["block"]: r for r in json.loads(capsys.readouterr().out)}
    trained = [b for b, r in rows.items() if r["trainable"]]
    assert trained == ["stage6", "head_conv", "head"]
    assert all(rows[b]["lr_min"] == rows[b]["lr_max"] == 0.01 for b in trained)
    assert rows["stem"]["lr_min"] is None and rows["stem"]["trainable"] == 0


def test_text_table():
    proc = run_inspect("--variant", "FE", "--input-size", "64")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["block", "params", "trainable", "lr_min", "lr_max"]
    assert lines[1].split()[-2:] == ["frozen", "frozen"]
    assert lines[-2].split()[0] == "head" and lines[-2].split()[-1] == "0.0001"
    assert lines[-1].startswith("total")


def test_bad_input_exits_2_with_the_fix(capsys):
    assert main(["--variant", "FTED", "--lam", "-3"]) == 2
    assert "lam=3" in capsys.readouterr().err
    assert main(["--variant", "12FT", "--input-size", "64"]) == 2
    assert "k <= 9" in capsys.readouterr().err


def test_smoke_test_builds_every_paper_variant(capsys):
    assert main(["--smoke-test"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        f"efficientnet_lite0 {v}" for v in ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")
    ]
