"""One CLI style: ``--help`` answers fast, with examples and exit codes; ``--runs-dir``
everywhere; unknown shipped space names answered with the list; pretrained checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_spaces import SHIPPED, SpecError, load_spec, shipped_path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("study.launch", "study.schedule", "study.server", "study.data",
            "dashboards.report", "trainables.inspect")


def _run(*argv: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


#: what makes ``--help`` slow (seconds to import each on 2 cores); none is needed to answer it
HEAVY = ("torch", "ray", "mlflow", "optuna", "timm", "torchvision", "matplotlib", "sklearn")

_HELP_PROBE = """
import runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("\\nHEAVY:" + ",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
sys.exit(code)
"""


@pytest.mark.parametrize("module", COMMANDS)
def test_help_answers_with_examples_and_exit_codes_and_imports_nothing_heavy(module):
    """``--help`` is fast because it imports none of the heavy libraries (a count, not a
    timing: how long they take to import depends on the machine and its load)."""
    done = subprocess.run([sys.executable, "-c", _HELP_PROBE.format(module=module,
                                                                    heavy=HEAVY)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    text = done.stdout.lower()
    assert "exit status" in text and "example" in text
    heavy = done.stdout.rsplit("HEAVY:", 1)[1].strip()
    assert heavy == "", f"{module} --help imports {heavy}"


@pytest.mark.parametrize("module", ("study.launch", "study.schedule", "study.server",
                                    "dashboards.report"))
def test_every_command_that_takes_a_runs_folder_calls_it_runs_dir(module):
    argv = [module, "run", "--help"] if module == "study.schedule" else [module, "--help"]
    assert "--runs-dir" in _run(*argv).stdout


def test_server_still_accepts_the_old_study_dir_spelling(tmp_path):
    from study.server import _parse

    assert _parse(["status", "--study-dir", str(tmp_path)]).study_dir == tmp_path
    assert _parse(["status", "--runs-dir", str(tmp_path)]).study_dir == tmp_path


def test_an_unknown_space_name_is_answered_with_the_shipped_ones(tmp_path):
    done = _run("study.launch", "--space", "papr", "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert all(name in done.stderr for name in SHIPPED)
    assert not (tmp_path / "runs").exists()


def test_inspect_help_choices_match_the_registries():
    from trainables import inspect
    from trainables.backbones import available_backbones
    from trainables.regimes import DEFAULT_LAM, DEPTHS, GRANULARITIES, PAPER_VARIANTS

    assert tuple(available_backbones()) == inspect.BACKBONES
    assert (inspect.PAPER_VARIANTS, inspect.DEPTHS, inspect.GRANULARITIES, inspect.DEFAULT_LAM
            ) == (PAPER_VARIANTS, DEPTHS, GRANULARITIES, DEFAULT_LAM)


def _space(tmp_path: Path, old: str, new: str, extra: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(shipped_path("smoke").read_text().replace(old, new) + extra)
    return path


def test_unpretrained_transfer_variants_are_refused_unless_allowed(tmp_path):
    bad = _space(tmp_path, "backbone: efficientnet_lite0",
                 "backbone: efficientnet_lite0\npretrained: false")
    with pytest.raises(SpecError, match=r"pretrained.*FE, FTED.*allow_unpretrained: true"):
        load_spec(bad)
    ok = _space(tmp_path, "backbone: efficientnet_lite0",
                "backbone: efficientnet_lite0\npretrained: false\nallow_unpretrained: true")
    spec = load_spec(ok)
    assert not spec.pretrained and spec.allow_unpretrained
    assert spec.fingerprint() == load_spec(ok).fingerprint()
    ri = _space(tmp_path, "variants: [FE, FTED]", "variants: [RI]\npretrained: false")
    assert load_spec(ri).variants == ("RI",)  # RI needs no weights: nothing to refuse


def test_missing_weights_exit_2_in_seconds_before_anything_starts(tmp_path):
    space = _space(tmp_path, "backbone: efficientnet_lite0", "backbone: inception_v3")
    space.write_text(space.read_text().replace("size: 48 ", "size: 80 "))
    runs = tmp_path / "runs"
    t0 = time.monotonic()
    done = _run("study.launch", "--space", str(space), "--runs-dir", str(runs),
                env={"TORCH_HOME": str(tmp_path / "empty-hub")})
    took = time.monotonic() - t0
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    expected = tmp_path / "empty-hub" / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    assert str(expected) in err and "needed by FE, FTED" in err
    assert "'weights: " in err and "--weights" not in err  # only options that exist
    assert not runs.exists()  # no lock, no MLflow store, no Ray folder
    assert took < 30, took


def test_missing_explicit_weights_file_is_named(tmp_path):
    gone = tmp_path / "nowhere.pth"
    space = _space(tmp_path, "backbone: efficientnet_lite0",
                   f"backbone: efficientnet_lite0\nweights: {gone}")
    done = _run("study.launch", "--space", str(space), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    assert str(gone) in done.stderr and "space file's 'weights:'" in done.stderr


def test_a_bad_data_path_is_named_before_any_server_or_ray_starts(tmp_path):
    from study.tracking._proc import session_members

    runs = tmp_path / "runs"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.launch", "--smoke-test", "--data",
         str(tmp_path / "does-not-exist"), "--data-format", "bcdr", "--runs-dir", str(runs)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, err
    assert "does-not-exist" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "mlflow").exists()  # the managed MLflow server never started
    assert not (runs / "smoke" / "ray").exists()
    assert session_members(proc.pid) == []  # nothing left running from the launcher
    assert "MLflow" not in out and took < 30, (out, took)


def test_readme_listing_of_quick_yaml_is_the_shipped_file():
    import yaml

    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml\nname: quick") + len("```yaml\n")
    listing = readme[start:readme.index("```", start)]
    shipped = yaml.safe_load(shipped_path("quick").read_text())
    assert yaml.safe_load(listing) == shipped, (
        "README's quick.yaml listing differs from search_spaces/quick.yaml: paste the file "
        "there without its comments")
