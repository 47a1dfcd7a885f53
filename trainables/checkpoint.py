"""Trial checkpoints sized to what changed: one directory, written atomically, resumable
bit-exactly on CPU.

Layout of a checkpoint directory::

    checkpoint.pt        the training state after the epoch it was written at (see below)
    best-eNNNN.pt        the changing weights of the epoch with the lowest validation loss

**Only what training changes is written.** A model is rebuilt exactly by
``TrialState.build`` (the seeded initialisation plus the pretrained file), so a checkpoint holds
the tensors training can change — parameters with ``requires_grad`` and the buffers of
normalisation layers that are not frozen (see :func:`changing_keys`) — plus the identity of
that base (:func:`base_identity`: backbone and the SHA-256 of the pretrained file). Restoring
rebuilds the frozen part from the file and refuses a checkpoint made against another file
(:class:`PretrainedMismatchError`). For FE on Inception-v3 that is the head alone instead of
the whole network; the best weights are kept the same way.

``checkpoint.pt`` holds those model tensors, the optimiser and scheduler state, the
early-stopping state, every random number generator the trial draws from (torch's global
CPU/CUDA generators for dropout and the trial's own shuffle and augmentation generators), the
per-epoch history and the trial's elapsed time. Every file is written to a temporary name in the
same directory, flushed and then renamed, so a crash leaves the previous checkpoint intact. The
best weights are kept in memory and written beside the checkpoint when they changed since the
last write, in an epoch-named file; ``checkpoint.pt`` names the current one, and older ones are
deleted only after the checkpoint naming the new one is in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from trainables.backbones._base import FROZEN_NORM_ATTR

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 2  # 2: changing tensors + base identity (1: whole model)
_BEST_PREFIX = "best-e"
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (corrupted, truncated, another format); names the file."""


class PretrainedMismatchError(CheckpointError):
    """A checkpoint's frozen part came from another pretrained file than this machine's."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex; cached per process by (path, size, mtime) — a trial restarts
    many times in one worker, and Inception-v3's file is ~100 MB."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def base_identity(backbone: str, weights_file: Path | None) -> dict[str, str | None]:
    """What the frozen part of a model is rebuilt from: the backbone and the SHA-256 of the
    pretrained file it loaded (``None`` for a random start, rebuilt from the trial's seed)."""
    return {"backbone": backbone,
            "pretrained_sha256": None if weights_file is None else file_sha256(weights_file)}


def check_base(saved: dict[str, Any] | None, now: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose frozen part would be rebuilt from another base."""
    if saved != now:
        saved = saved or {}
        raise PretrainedMismatchError(
            f"{path}: the checkpoint was made against pretrained weights "
            f"{saved.get('backbone')} sha256={saved.get('pretrained_sha256')}, but this "
            f"machine's are {now['backbone']} sha256={now['pretrained_sha256']}; its frozen "
            "layers cannot be rebuilt. Stage the same weights file on every node (or start "
            "the trial afresh in an empty directory)")


def changing_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys that training can change: parameters with ``requires_grad`` and the
    persistent buffers of modules that are not frozen normalisation layers (BatchNorm
    statistics of trained blocks). Everything else equals what the model was built with."""
    persistent = set(model.state_dict(keep_vars=True))
    keys = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        frozen_norm = getattr(module, FROZEN_NORM_ATTR, False)
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and f"{dot}{name}" in persistent:
                keys.append(f"{dot}{name}")
        if not frozen_norm:
            keys.extend(f"{dot}{name}" for name, _ in module.named_buffers(recurse=False)
                        if f"{dot}{name}" in persistent)
    return keys


def load_changing(model: torch.nn.Module, state: dict[str, torch.Tensor],
                  keys: list[str], path: Path | str) -> None:
    """Load a :func:`changing_keys` subset into ``model`` (whose other tensors are its base);
    refuses a subset with other keys (another variant or backbone)."""
    if set(state) != set(keys):
        extra, missing = sorted(set(state) - set(keys)), sorted(set(keys) - set(state))
        raise CheckpointError(f"{path}: the checkpoint's tensors do not fit this trial's model "
                              f"(unexpected {extra[:3]}, missing {missing[:3]})")
    model.load_state_dict(state, strict=False)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable; not supported everywhere
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Snapshot of torch's global generators and the trial's named ``generators``."""
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
        "generator_devices": {name: g.device.type for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore a :func:`rng_state` snapshot into the global and the named generators."""
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint has %d CUDA generator states, this machine %d GPUs; "
                           "CUDA generators not restored", len(cuda), torch.cuda.device_count())
    missing = set(generators) - set(state["generators"])
    if missing:
        raise KeyError(f"checkpoint lacks generator state for {sorted(missing)}")
    saved_devices = state.get("generator_devices", {})
    for name, g in generators.items():
        if saved_devices.get(name, g.device.type) != g.device.type:
            logger.warning("generator %r was saved on %s, now on %s: it restarts from its seed, "
                           "so draws differ from an uninterrupted run", name,
                           saved_devices[name], g.device.type)
            continue
        g.set_state(state["generators"][name].cpu())


def best_file_name(epoch: int) -> str:
    return f"{_BEST_PREFIX}{epoch:04d}.pt"


def save_best(directory: Path, epoch: int, model_state: dict[str, torch.Tensor]) -> str:
    """Write the best (changing) weights of ``epoch``; returns the file name to record in the
    checkpoint."""
    name = best_file_name(epoch)
    atomic_save({k: v.detach().cpu() for k, v in model_state.items()}, Path(directory) / name)
    return name


def load_best(directory: Path, name: str) -> dict[str, torch.Tensor]:
    """Weights written by :func:`save_best` (on CPU)."""
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"best weights {path} named by the checkpoint are missing")
    return _load(path)


def _load(path: Path) -> Any:
    """``torch.load`` on CPU; a truncated or corrupted file becomes a ``CheckpointError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- zip/pickle/tensor errors, whatever the damage
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {first}); the file is "
            "truncated or corrupted, so the trial cannot resume from it") from exc


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write ``checkpoint.pt`` atomically, then delete best-weights files it no longer names."""
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    atomic_save({"format": FORMAT_VERSION, **payload}, path)
    keep = payload.get("best_file")
    for stale in directory.glob(f"{_BEST_PREFIX}*.pt"):
        if stale.name != keep:
            stale.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (tensors on CPU), or ``None`` if there is none."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    payload = _load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this code reads "
                         f"{FORMAT_VERSION}; start the trial afresh in an empty directory")
    return payload
