"""The trial limit follows what the cluster can reach, not what is up at the start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from search_spaces import load_spec
from study.cluster import load_cluster_config
from study.phases._slots import live_nodes, trial_slots, trials_per_node

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_cluster_runs_as_many_trials_as_its_reachable_gpu_slots():
    config = load_cluster_config(ROOT / "ray_cluster.yaml")
    paper = load_spec("paper")
    types = config.data["available_node_types"]
    gpu_slots = sum(int(t.get("max_workers", 0)) * float((t.get("resources") or {}).get("GPU", 0))
                    / paper.resources.gpus
                    for name, t in types.items() if name != config.data["head_node_type"])
    assert gpu_slots >= 2  # the shipped file has GPU workers to reach
    # no worker is up: the head alone has no GPU, yet the limit is the reachable one
    head = types[config.data["head_node_type"]].get("resources") or {}
    assert trial_slots(paper, [head]) == 1
    assert trial_slots(paper, config.reachable_nodes()) == gpu_slots
    # 1 CPU per GPU trial (was 4): CPUs never cap the GPUs on the shipped workers
    assert paper.resources.cpus == 1


def test_packing_is_per_node_and_fractional_gpus_share_a_device():
    spec = load_spec("paper")
    quarter = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources,
                                                                      cpus=1.0, gpus=0.25))
    assert trials_per_node({"CPU": 1.0, "GPU": 0.25}, {"CPU": 8.0, "GPU": 1.0}) == 4
    assert trial_slots(quarter, [{"CPU": 8.0, "GPU": 1.0}] * 3) == 12
    # CPUs left on one node cannot serve GPUs on another
    assert trial_slots(quarter, [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 16.0}]) == 2
    cpu_only = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources,
                                                                       cpus=1.0, gpus=0.0))
    assert trial_slots(cpu_only, [{"CPU": 2.0}, {"CPU": 3.0, "GPU": 1.0}]) == 5


def test_a_local_ray_counts_its_live_nodes(ray_local):
    nodes = live_nodes()
    assert nodes and all("CPU" in n for n in nodes)
    quick = load_spec("quick")
    cpus = sum(n["CPU"] for n in nodes)
    assert trial_slots(quick, nodes) == int(cpus // quick.resources.cpus)


@pytest.mark.parametrize("resources", [{"CPU": 0.0}, {}])
def test_at_least_one_slot(resources):
    assert trial_slots(load_spec("quick"), [resources]) == 1
