"""The HTML report opens in headless Chromium (Debian's ``chromium``) with its tables and
images: the rendered DOM is checked, and a screenshot is taken (kept under the test's tmp dir,
``report.png``, for a human to look at)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def _chromium(binary, tmp_path, *args):
    done = subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_opens_in_headless_chromium_with_tables_and_images(chromium, known_report,
                                                                  tmp_path):
    from PIL import Image

    page = known_report.written.html
    raw = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', raw)  # self-contained
    dom = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    for name in ("table1", "table1_reported", "table2", "delong", "paired",
                 "operating_points", "calibration", "importance", "compute"):
        assert f'id="table-{name}"' in dom
    fted = known_report.computed.tables["table1"].set_index("variant").loc["FTED"]
    assert re.search(r'<table id="table-table1">.*?<td>FTED</td><td>lesion</td><td>'
                     + re.escape(f"{fted.accuracy_pct:.2f} [{fted.accuracy_ci_low:.2f}, "), dom,
                     re.S)
    assert 'id="table-views"' in dom and "unit of analysis: the lesion" in dom
    assert "reported, not reproduced" in dom and "Pérez et al., 2014" in dom
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert len(images) == 6
    for name in ("roc", "reliability", "search_progress", "importance", "fted_lambda_lr",
                 "compute"):
        assert f'id="figure-{name}"' in dom
    assert "data_fingerprint" in dom and "dddddddddddddddd" in dom and "0123abc" in dom

    shot = tmp_path / "report.png"
    _chromium(chromium, tmp_path, "--window-size=1200,2400", f"--screenshot={shot}",
              page.as_uri())
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1200)
    # the ROC figure is drawn: FTED's red curve and FE's blue one are on the screen
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    blue = (img[..., 2] > 150) & (img[..., 0] < 60)
    assert red.sum() > 200 and blue.sum() > 200
