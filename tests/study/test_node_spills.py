"""What a trial logger spilled on a node where no further trial starts is delivered at the
study's end: the driver asks every other node to replay its own spill folder
(``study.cluster._spills``). Real two-node Ray (``ray.cluster_utils.Cluster``, in a process of
its own, ``TMPDIR`` the nodes' spill folder's parent) and the session's real MLflow server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from study.cluster._spills import NodeReplay, left_behind
from study.tracking import RunLogger
from tests._ray_nodes import run_cluster_script

pytestmark = pytest.mark.slow

_SCRIPT = """
import dataclasses, json, sys
args = json.loads(sys.argv[1])
sys.path.insert(0, args["root"])
import ray
from tests._ray_nodes import two_nodes
from study.cluster._spills import replay_on_nodes

cluster, worker = two_nodes(args["worker_tmp"])
try:
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    here = ray.get_runtime_context().get_node_id()
    replays = replay_on_nodes(args["uri"], None, timeout_s=120)
    print(json.dumps({"here": here, "worker": worker.node_id,
                      "replays": [dataclasses.asdict(r) for r in replays]}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_the_other_nodes_replay_their_spills_at_the_end(mlflow_server, mlflow_client, tmp_path,
                                                       monkeypatch):
    exp = mlflow_client.create_experiment(f"node-spills-{tmp_path.name}")
    run_id = mlflow_client.create_run(exp).info.run_id
    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")   # the nodes' temp folder (short: sockets)
    try:
        spills = Path(tmp) / "tlstudy-mlflow-spill"     # = default_spill_dir() on the nodes
        log = RunLogger(mlflow_server, run_id, spill_dir=spills)
        for step in (1, 2, 3):
            log.metrics(step, {"val_loss": 1.0 / step})
        log._status = "FINISHED"                        # as a failed finish() leaves it
        log._give_up()                                  # spilled, as when the server was away
        assert [p.name for p in spills.iterdir()] == [f"{run_id}.pending.json"]
        monkeypatch.setenv("TMPDIR", tmp)
        out = run_cluster_script(_SCRIPT, {"uri": mlflow_server}, tmp_path, timeout_s=300)
        replays = [NodeReplay(**r) for r in out["replays"]]
        assert [r.node_id for r in replays] == [out["worker"]]   # not the driver's own node
        assert (replays[0].delivered, replays[0].left, replays[0].error) == (1, 0, "")
        assert left_behind(replays) == []
        assert not list(spills.glob("*.pending.json"))
        steps = [m.step for m in mlflow_client.get_metric_history(run_id, "val_loss")]
        assert sorted(steps) == [1, 2, 3]
        assert mlflow_client.get_run(run_id).info.status == "FINISHED"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_node_whose_spills_stay_is_named_with_its_folder():
    lines = left_behind([
        NodeReplay("a" * 56, "10.0.0.7", delivered=1, left=0, folder="w7:/tmp/s"),
        NodeReplay("b" * 56, "10.0.0.8", delivered=0, left=2, folder="w8:/tmp/s"),
        NodeReplay("c" * 56, "10.0.0.9", error="no answer within 30 s")])
    assert lines == [
        "node bbbbbbbb (10.0.0.8): 2 spilled run(s) not delivered yet, in w8:/tmp/s "
        "(replayed by the next trial there)",
        "node cccccccc (10.0.0.9): spilled MLflow data not replayed (no answer within 30 s); "
        "it stays in that machine's temp folder (tlstudy-mlflow-spill) for the next trial "
        "there"]
