"""What Tune has recorded about a trial in its storage, read the way a user would."""

from __future__ import annotations

import json
from pathlib import Path

from trainables.checkpoint import CHECKPOINT_FILE


def registered_checkpoint(trial_dir: Path) -> Path | None:
    """The trial's checkpoint Tune has taken in (persisted, and named by a result Tune's driver
    processed and wrote to ``result.json``), or None before there is one. A trial restarted
    after a failure goes on from this one."""
    try:
        lines = (Path(trial_dir) / "result.json").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            name = json.loads(line).get("checkpoint_dir_name")
        except ValueError:  # a line being written
            continue
        if name and (Path(trial_dir) / name / CHECKPOINT_FILE).is_file():
            return Path(trial_dir) / name
    return None
