"""Worker launched by tests/test_sharded_analysis.py under ``torchrun`` (not collected by pytest).

``_shard_worker.py OUT``: every analysis in :data:`ANALYSES` runs sharded across the ranks and
rank 0 saves the results to ``OUT/sharded.pt``. The test runs the same functions in one process
and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from toolkit import data, distributed, models


def _digits(n=96):
    tr, _ = data.load_digits(seed=0)
    x, y = tr.tensors
    return x[:n].double(), y[:n]


def _mlp():
    torch.manual_seed(0)
    return models.MLP(64, [32, 32], 10).double().eval()


def ntk_trace():
    from toolkit.ntk import empirical_ntk
    x, _ = _digits(37)  # blocks of 8: an uneven number of blocks per rank
    return empirical_ntk(_mlp(), x, mode="trace", chunk_size=8, progress=False)


def ntk_full_cross():
    from toolkit.ntk import empirical_ntk
    x, _ = _digits(30)
    return empirical_ntk(_mlp(), x[:11], x[11:], mode="full", method="jacobian", chunk_size=4,
                         progress=False)


def surface():
    from toolkit import landscape
    x, y = _digits(50)
    model = _mlp()
    d1 = landscape.random_direction(model, seed=1)
    d2 = landscape.random_direction(model, seed=2)
    s = landscape.surface_2d(model, "ce", (x, y), d1, d2, steps=7, chunk_size=5, progress=False)
    return {k: torch.from_numpy(v) for k, v in s.metrics.items()}


def hessian():
    from toolkit import hessian as hs
    x, y = _digits(45)
    model = _mlp()
    op = hs.HessianOperator(model, "ce", (x, y), batch_size=8)
    v = torch.randn(op.numel, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    top = hs.top_eigenvalues(model, "ce", (x, y), k=2, batch_size=8)
    tr = hs.trace(model, "ce", (x, y), n_samples=6, batch_size=8, progress=False)
    sharp = hs.sharpness(model, "ce", (x, y), rho=0.05, batch_size=8)
    return {"hv": op.matvec(v), "top": torch.as_tensor(top.eigenvalues),
            "trace": torch.tensor(tr.trace), "sharpness": torch.tensor(sharp.sharpness)}


def collapse():
    from toolkit import collapse as nc
    x, y = _digits(83)
    metrics = nc.collapse_metrics(_mlp(), (x, y), batch_size=16)
    return {k: torch.tensor(float(v)) for k, v in metrics.as_dict().items()
            if isinstance(v, float | int) and not isinstance(v, bool)}


ANALYSES = {"ntk_trace": ntk_trace, "ntk_full_cross": ntk_full_cross, "surface": surface,
            "hessian": hessian, "collapse": collapse}


def _register_optional() -> None:
    """Analyses of modules that may be absent in a partial checkout."""


def main(out: Path) -> None:
    distributed.init_from_env("cpu")
    results = {name: fn() for name, fn in ANALYSES.items()}
    results["_world_size"] = torch.tensor(distributed.world_size())
    if distributed.is_main():
        torch.save(results, out / "sharded.pt")
    distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
