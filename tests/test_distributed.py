"""Multi-process training and the distributed helpers.

The torchrun tests launch ``torch.distributed.run --nproc_per_node=2`` (gloo, CPU) on
tests/_ddp_worker.py and compare with the same training in this process: two ranks with half of
each global batch must end at the weights of one process with the whole batch, and a run whose
rank 1 dies mid-way must resume, in a fresh launch, to the same weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit import distributed, train

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_ddp_worker.py"


def _worker_module():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node=nproc ARGS`` on this machine's loopback with gloo."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ------------------------------------------------------------------------------- single process


def test_shard_range_partitions_in_order():
    for n in (0, 1, 2, 7, 10):
        for world in (1, 2, 3, 4):
            blocks = [list(distributed.shard_range(n, r, world)) for r in range(world)]
            assert sum(blocks, []) == list(range(n))
            sizes = [len(b) for b in blocks]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_range(4, 2, 2)
    with pytest.raises(ValueError, match="non-negative"):
        distributed.shard_indices(-1)


def test_helpers_are_identities_in_one_process():
    t = torch.arange(5.0)
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.all_reduce_sum(t) is t
    assert distributed.all_gather_cat(t) is t
    assert distributed.shard_indices(5).tolist() == list(range(5))
    assert distributed.init_from_env("cpu") == torch.device("cpu")  # no torchrun env: no group


def test_auto_chunk_size_follows_the_budget():
    assert distributed.auto_chunk_size(1024, budget_bytes=10 * 1024) == 10
    assert distributed.auto_chunk_size(4096, budget_bytes=10 * 1024, maximum=3) == 2
    assert distributed.auto_chunk_size(2**40, budget_bytes=1024) == 1  # never below one item
    cpu_default = distributed.auto_chunk_size(2**20, device="cpu")
    assert cpu_default == distributed.CPU_BUDGET_BYTES // 2**20
    with pytest.raises(ValueError, match="bytes_per_item"):
        distributed.auto_chunk_size(0)


def test_oom_hint_names_option_and_value():
    with pytest.raises(torch.OutOfMemoryError, match=r"Lower `chunk_size` \(try chunk_size=64\)"):
        with distributed.oom_hint("chunk_size", 64):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(MemoryError, match="batch_size=8"):
        with distributed.oom_hint("batch_size", 8):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 1 bytes.")
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors pass through untouched
        with distributed.oom_hint("batch_size", 8):
            raise RuntimeError("unrelated")


def test_compile_flag_routes_training_steps_through_torch_compile(monkeypatch):
    from toolkit import data, models
    compiled, calls = [], []

    def fake_compile(module):
        compiled.append(module)
        return lambda x: calls.append(len(x)) or module(x)
    monkeypatch.setattr(torch, "compile", fake_compile)
    tr, _ = data.gaussian_mixture(60, n_classes=3, dim=4, seed=0)  # 45 training samples
    model = models.MLP(4, [8], 3)
    train.fit(model, tr, epochs=2, batch_size=15, compile=True, progress=False)
    assert compiled == [model]
    assert calls == [15] * 6  # 3 steps x 2 epochs; evaluation uses the plain module


# ------------------------------------------------------------------------------------ torchrun


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Two launches: (1) unit checks, DDP trainings, a training whose rank 1 dies at epoch 3;
    (2) a fresh launch that resumes it. Returns the output folder and the checkpoint epoch that
    the dead launch left behind."""
    out = tmp_path_factory.mktemp("ddp")
    first = torchrun(str(WORKER), "all", str(out))
    assert (out / "cli" / "run.json").exists(), first.stdout + first.stderr
    assert first.returncode != 0, "rank 1 was meant to die mid-run"
    died_at = train.load_checkpoint(out / "ckpt" / "checkpoint.pt")["epoch"]
    second = torchrun(str(WORKER), "resume", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    return out, died_at


@pytest.mark.distributed
def test_collectives_under_two_ranks(ddp_runs):
    out, _ = ddp_runs
    results = [json.loads((out / f"units_rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in results] == [2, 2]
    for n in ("0", "1", "5", "8"):
        assert results[0]["shards"][n] + results[1]["shards"][n] == list(range(int(n)))
    for r in results:
        # rank 0 sent one row of zeros, rank 1 two rows of ones: concatenated in rank order
        assert r["gathered"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert r["indices"] == [0, 1, 2]  # shards of 3 are [0, 1] and [2]
        assert r["sum"] == 3.0  # 1 + 2


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["uneven", "empty_share", "sam_full_batch"])
def test_two_ranks_match_one_process(ddp_runs, name):
    out, _ = ddp_runs
    ddp = torch.load(out / f"{name}.pt", weights_only=False)
    state, history = _worker_module().train_run(name)
    assert _max_diff(ddp["state"], state) < 1e-5
    assert ddp["history"]["train_loss"] == pytest.approx(history["train_loss"].tolist(), rel=1e-5)
    assert ddp["history"]["test_acc"] == pytest.approx(history["test_acc"].tolist())
    # and training moved the weights far more than the tolerance
    torch.manual_seed(0)
    init = {k: v.detach() for k, v in _worker_module().models.MLP(5, [16, 16], 3)
            .state_dict().items()}
    assert _max_diff(init, state) > 1e-2


@pytest.mark.distributed
def test_killed_run_resumes_to_the_same_weights(ddp_runs):
    out, died_at = ddp_runs
    worker = _worker_module()
    epochs = worker.RUNS["killed"]["epochs"]
    assert 1 <= died_at < epochs  # the launch really died mid-way, after a checkpoint
    resumed = torch.load(out / "resumed.pt", weights_only=False)
    uninterrupted = torch.load(out / "killed_reference.pt", weights_only=False)
    assert resumed["history"]["epoch"] == list(range(epochs + 1))
    assert _max_diff(resumed["state"], uninterrupted["state"]) < 1e-6
    state, _ = worker.train_run("killed")
    assert _max_diff(resumed["state"], state) < 1e-5


@pytest.mark.distributed
def test_command_line_under_two_ranks_matches_one_process(ddp_runs, tmp_path, capsys):
    from toolkit import cli
    out, _ = ddp_runs
    info = json.loads((out / "cli" / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert cli.main(_worker_module().CLI_TRAIN + ["--out", str(tmp_path)]) == 0
    two = train.load_checkpoint(out / "cli" / "checkpoint.pt")
    one = train.load_checkpoint(tmp_path / "checkpoint.pt")
    assert two["epoch"] == one["epoch"] == 2
    assert _max_diff(two["model"], one["model"]) < 1e-5
