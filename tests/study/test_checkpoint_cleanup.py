"""After a study the search trials' checkpoints are removed wherever Tune's storage is: a
folder, or a URI read through pyarrow's filesystems as Tune reads it (``file://`` here; the
same code path serves ``s3://`` and ``gs://``). Everything else of a trial stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.phases._run import _drop_checkpoints


def _trial(root: Path, name: str) -> Path:
    trial = root / name
    for ck in ("checkpoint_000000", "checkpoint_000001"):
        (trial / ck).mkdir(parents=True)
        (trial / ck / "checkpoint.pt").write_bytes(b"x" * 500_000)
        (trial / ck / "epochs.jsonl").write_text("{}\n")
    (trial / "result.json").write_text("{}\n")
    (trial / "params.json").write_text("{}\n")
    return trial


@pytest.mark.parametrize("as_uri", [False, True])
def test_search_checkpoints_go_the_rest_stays(tmp_path: Path, as_uri: bool, caplog) -> None:
    caplog.set_level("INFO")
    search = [_trial(tmp_path, f"run_{i}") for i in range(2)]
    evaluation = _trial(tmp_path, "run_eval")
    paths = [f"file://{t}" if as_uri else str(t) for t in search]
    _drop_checkpoints(paths)
    for trial in search:
        assert sorted(p.name for p in trial.iterdir()) == ["params.json", "result.json"]
    assert (evaluation / "checkpoint_000001" / "checkpoint.pt").is_file()  # not asked: kept
    assert "removed the search trials' checkpoints (2.0 MB)" in caplog.text  # 2 trials × 2 × 500 kB


def test_a_trial_folder_already_gone_is_no_error(tmp_path: Path) -> None:
    _drop_checkpoints([str(tmp_path / "gone"), f"file://{tmp_path / 'gone-too'}"])
