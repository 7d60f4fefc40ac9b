"""Analyses split across 2 torchrun ranks (gloo) equal the one-process results."""

import importlib.util
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker():
    return _load("_shard_worker")


def torchrun(*args, **kwargs):
    return _load("test_distributed").torchrun(*args, **kwargs)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    proc = torchrun(str(HERE / "_shard_worker.py"), str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "sharded.pt", weights_only=True)


@pytest.mark.distributed
def test_worker_ran_on_two_ranks(sharded):
    assert int(sharded["_world_size"]) == 2


@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(_worker().ANALYSES))
def test_two_ranks_equal_one_process(sharded, name):
    worker = _worker()
    expected = worker.ANALYSES[name]()
    got = sharded[name]
    if isinstance(expected, dict):
        assert expected and expected.keys() == got.keys()
        for k in expected:
            torch.testing.assert_close(torch.as_tensor(got[k]), torch.as_tensor(expected[k]),
                                       rtol=1e-9, atol=1e-9, equal_nan=True)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)
