"""Worker launched by tests/test_distributed.py under ``torchrun`` (not collected by pytest).

``_ddp_worker.py all OUT``: collective unit checks, three DDP trainings, a command-line training,
then a checkpointed training in which rank 1 dies at epoch ``KILL_AT`` (the launch fails on
purpose). ``_ddp_worker.py resume OUT``: a fresh launch that resumes the killed training from its
checkpoint, and runs it uninterrupted for reference.
The same :func:`train_run` runs in the pytest process as the one-process reference.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from toolkit import cli, data, distributed, models, train

KILL_AT = 3
CLI_TRAIN = ["train", "--experiment", "tour", "--preset", "toy", "--epochs", "2",
             "--batch-size", "256", "--device", "cpu", "--no-progress"]
RUNS = {
    # 207 training samples, global batch 32: the last batch (15) splits 8/7 over two ranks
    "uneven": dict(n_samples=276, batch_size=32, epochs=4, optimizer="sgd", momentum=0.9),
    # 33 samples, global batch 32: the last batch has one sample, one rank gets none
    "empty_share": dict(n_samples=44, batch_size=32, epochs=3, optimizer="adam", momentum=0.0),
    # full-batch SAM: both closures all-reduce
    "sam_full_batch": dict(n_samples=120, batch_size=None, epochs=3, optimizer="sam", momentum=0.0),
    "killed": dict(n_samples=276, batch_size=32, epochs=5, optimizer="sgd", momentum=0.9),
}


def train_run(name: str, checkpoint_dir=None, callbacks=()):
    """Train the tiny model of run ``name``; return (state_dict, history)."""
    cfg = RUNS[name]
    tr, te = data.gaussian_mixture(cfg["n_samples"], n_classes=3, dim=5, separation=2.0, seed=1)
    torch.manual_seed(0)
    model = models.MLP(5, [16, 16], 3)
    history = train.fit(model, tr, test=te, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                        lr=0.05, momentum=cfg["momentum"], optimizer=cfg["optimizer"], seed=3,
                        device="cpu", progress=False, checkpoint_dir=checkpoint_dir,
                        checkpoint_every=1, callbacks=callbacks)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, history


def _save(out: Path, name: str, state, history) -> None:
    if distributed.is_main():
        torch.save({"state": state, "history": history.to_dict("list")}, out / f"{name}.pt")


def _units(out: Path) -> None:
    r, w = distributed.rank(), distributed.world_size()
    shards = {n: list(distributed.shard_range(n)) for n in (0, 1, 5, 8)}
    # unequal shard sizes: rank r contributes r + 1 rows filled with r
    piece = torch.full((r + 1, 2), float(r))
    gathered = distributed.all_gather_cat(piece)
    # gathering index shards returns range(n) in order, also when a rank's shard is empty
    idx = distributed.all_gather_cat(distributed.shard_indices(3))
    total = distributed.all_reduce_sum(torch.tensor([float(r + 1)]))
    (out / f"units_rank{r}.json").write_text(json.dumps({
        "rank": r, "world": w, "shards": {str(k): v for k, v in shards.items()},
        "gathered": gathered.tolist(), "indices": idx.tolist(), "sum": total.item()}))


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    distributed.init_from_env("cpu")
    if mode == "all":
        _units(out)
        for name in ("uneven", "empty_share", "sam_full_batch"):
            _save(out, name, *train_run(name))
        code = cli.main(CLI_TRAIN + ["--out", str(out / "cli")])
        assert code == 0, code

        def die(epoch, model, history):
            if epoch == KILL_AT and distributed.rank() == 1:
                os._exit(3)  # a crash: no clean-up, no exception handling
        train_run("killed", checkpoint_dir=out / "ckpt", callbacks=[die])
        raise SystemExit("rank 1 should have died")
    if mode != "resume":
        raise SystemExit(f"unknown mode {mode!r}")
    _save(out, "resumed", *train_run("killed", checkpoint_dir=out / "ckpt"))
    _save(out, "killed_reference", *train_run("killed"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
