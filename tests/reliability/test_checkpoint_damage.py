"""Damaged checkpoint files are refused with a ``CheckpointError`` naming the file.

(The end-to-end version — a running trial's checkpoint corrupted, its worker killed — is
``test_faults.py``; this one is fast and runs by default.)
"""

from __future__ import annotations

import pytest
import torch

from tests.reliability._tally import tally
from trainables.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, save_checkpoint

DAMAGES = {
    "truncated to a third": lambda b: b[: len(b) // 3],
    "empty": lambda b: b"",
    "random bytes": lambda b: bytes(range(256)) * 8,
    "middle overwritten": lambda b: b[:200] + b"\xff" * 400 + b[600:],
    "not a checkpoint (a list)": None,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    save_checkpoint(tmp_path, {"epoch": 3, "model": {"w": torch.arange(1000.0)}})
    path = tmp_path / CHECKPOINT_FILE
    assert load_checkpoint(tmp_path)["epoch"] == 3
    if DAMAGES[damage] is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(DAMAGES[damage](path.read_bytes()))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value).startswith(str(path))
    assert "Traceback" not in str(err.value)
    tally["damaged checkpoint files refused (unit)"] += 1
