"""Checkpoint files: atomic writes, RNG round trips, best-weights bookkeeping."""

import pytest
import torch

from trainables import checkpoint as ckpt


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"epoch": 1, "best_file": None})
    with pytest.raises(RuntimeError, match="cannot pickle"):
        ckpt.save_checkpoint(tmp_path, {"epoch": 2, "best_file": None, "bad": _Unpicklable()})
    assert ckpt.load_checkpoint(tmp_path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.CHECKPOINT_FILE]


def test_rng_state_round_trip_replays_the_same_draws():
    gens = {"shuffle": torch.Generator().manual_seed(1), "augment": torch.Generator()}
    torch.manual_seed(7)
    state = ckpt.rng_state(gens)
    first = (torch.rand(3), torch.rand(3, generator=gens["shuffle"]),
             torch.rand(3, generator=gens["augment"]))
    ckpt.set_rng_state(state, gens)
    again = (torch.rand(3), torch.rand(3, generator=gens["shuffle"]),
             torch.rand(3, generator=gens["augment"]))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(KeyError, match="extra"):
        ckpt.set_rng_state(state, {**gens, "extra": torch.Generator()})


def test_only_the_named_best_file_survives(tmp_path):
    weights = {"w": torch.ones(2)}
    first = ckpt.save_best(tmp_path, 3, weights)
    ckpt.save_checkpoint(tmp_path, {"best_file": first})
    second = ckpt.save_best(tmp_path, 5, {"w": torch.zeros(2)})
    assert {p.name for p in tmp_path.glob("best-e*")} == {first, second}  # until committed
    ckpt.save_checkpoint(tmp_path, {"best_file": second})
    assert [p.name for p in tmp_path.glob("best-e*")] == ["best-e0005.pt"]
    assert torch.equal(ckpt.load_best(tmp_path, second)["w"], torch.zeros(2))
    with pytest.raises(FileNotFoundError, match="best-e0003.pt"):
        ckpt.load_best(tmp_path, first)


def test_no_checkpoint_and_foreign_format(tmp_path):
    assert ckpt.load_checkpoint(tmp_path) is None
    torch.save({"format": 99}, tmp_path / ckpt.CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="format 99"):
        ckpt.load_checkpoint(tmp_path)
