"""Benchmark: peak resident memory of the notebooks' main computations, and of the analyses that
grow with the problem (NTK, loss surfaces) with and without chunking.

Each measurement runs in a fresh interpreter (``python bench_memory.py --child NAME``) that reports
its peak resident set size (``ru_maxrss``) at the end, so measurements never see each other's
memory. The baseline is the same interpreter after ``import torch, toolkit`` doing nothing; the
table gives every measurement's peak, its excess over the baseline and the ratio to it. Binder's
limit for the toy presets is 2 GB resident.

Adding a measurement is a decorated function (``@measurement("group", "name")``) that does the
work; analyses that are missing or fail are reported as such, not fatal. Phase-2 hooks: the
``ntk`` and ``landscape`` groups run when those modules import and run; add collapse
(``CollapseAccumulator`` over a DataLoader) and Hessian (``hvp`` over batches) the same way.

Run: ``python benchmarks/bench_memory.py [--only GROUP ...] [--large] [--list]``. Peak RSS is a
property of the process, not a timing, so contention on a shared machine changes it little; the
seconds column is indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    group: str
    name: str
    fn: Callable[[], str | None]


MEASUREMENTS: list[Measurement] = []


def measurement(group: str, name: str):
    """Register ``fn() -> optional note`` as a named measurement of ``group``."""
    def register(fn):
        MEASUREMENTS.append(Measurement(group, name, fn))
        return fn
    return register


# ----------------------------------------------------------------------------------------- core


@measurement("core", "baseline: import torch + toolkit")
def _baseline():
    import toolkit  # noqa: F401


@measurement("core", "tour toy: digits, MLP 64-128-10, fit 30 epochs")
def _tour_toy():
    from toolkit import data, models, presets, train
    p = presets.get_preset("tour", "toy")
    tr, te = data.load(p.dataset, seed=0)
    model = models.MLP(tr.tensors[0].shape[1], p.widths, data.n_classes(tr))
    h = train.fit(model, tr, test=te, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                  momentum=p["momentum"], device="cpu", progress=False)
    return f"test_acc {h['test_acc'].iloc[-1]:.3f}"


@measurement("core", "tour full (CPU, 2 epochs): MNIST-1D, MLP 40-512-512-10")
def _tour_full_two_epochs():
    from toolkit import data, models, presets, train
    p = presets.get_preset("tour", "full")
    tr, te = data.load(p.dataset, seed=0)
    model = models.MLP(tr.tensors[0].shape[1], p.widths, data.n_classes(tr))
    train.fit(model, tr, test=te, epochs=2, batch_size=p.batch_size, lr=p.lr,
              momentum=p["momentum"], device="cpu", progress=False)


# ------------------------------------------------------------------------------------------ NTK


def _ntk_setup(n: int, width: int = 512):
    import torch

    from toolkit import data, models
    tr, _ = data.load_digits(seed=0)
    x = tr.tensors[0][:n]
    torch.manual_seed(0)
    return models.MLP(64, [width], 10), x


def _ntk(n: int, chunked: bool):
    def run():
        from toolkit import ntk
        model, x = _ntk_setup(n)
        kwargs = dict(memory_budget=64 * 2**20) if chunked else dict(chunk_size=n)
        k = ntk.empirical_ntk(model, x, mode="trace", method="jacobian", progress=False,
                              **kwargs)
        return f"kernel {tuple(k.shape)}"
    return run


LARGE = "--large" in sys.argv  # the paper-ish sizes: several GB and minutes per measurement

for _n in (128, 256, 512) + ((1024,) if LARGE else ()):
    measurement("ntk", f"empirical_ntk jacobian N={_n}, one block")(_ntk(_n, chunked=False))
    measurement("ntk", f"empirical_ntk jacobian N={_n}, 64 MiB blocks")(_ntk(_n, chunked=True))


# ------------------------------------------------------------------------------------ landscape


def _surface(steps: int, chunk_size: int | None):
    def run():
        import torch

        from toolkit import data, landscape, models, train
        tr, _ = data.load_digits(seed=0)
        torch.manual_seed(0)
        model = models.MLP(64, [256, 256], 10)
        d1 = landscape.random_direction(model, seed=1)
        d2 = landscape.random_direction(model, seed=2)
        s = landscape.surface_2d(model, train.get_loss("ce"), tr.tensors, d1, d2, steps=steps,
                                 chunk_size=chunk_size, mode="vmap", progress=False)
        return f"grid {s.metrics['loss'].shape}"
    return run


for _steps in (11, 21) + ((41,) if LARGE else ()):
    measurement("landscape", f"surface_2d {_steps}x{_steps} vmap, all points at once")(
        _surface(_steps, _steps * _steps))
    measurement("landscape", f"surface_2d {_steps}x{_steps} vmap, chunks of 16 points")(
        _surface(_steps, 16))


# ---------------------------------------------------------------------------------------- runner


def _child(name: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    match = [m for m in MEASUREMENTS if m.name == name]
    start = time.perf_counter()
    note = match[0].fn()
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": seconds, "note": note or ""}))


def _measure(m: Measurement) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", m.name] + (["--large"] if LARGE else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"error": last[:70]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="groups to run (default: all): core ntk landscape")
    parser.add_argument("--list", action="store_true", help="list the measurements and exit")
    parser.add_argument("--large", action="store_true",
                        help="add NTK N=1024 and a 41x41 surface (needs ~10 GB and ~10 minutes)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child)
        return 0
    chosen = [m for m in MEASUREMENTS if args.only is None or m.group in args.only
              or m.group == "core" and m.name.startswith("baseline")]
    if args.list:
        for m in chosen:
            print(f"{m.group:<10} {m.name}")
        return 0
    rows = []
    for m in chosen:
        print(f"measuring {m.name} ...", file=sys.stderr, flush=True)
        rows.append((m, _measure(m)))
    base = next(r["peak_mib"] for m, r in rows if m.name.startswith("baseline"))
    print(f"{'group':<10} {'measurement':<58} {'peak MiB':>9} {'excess':>8} {'x base':>7} "
          f"{'s':>6}  note")
    print("-" * 115)
    for m, r in rows:
        if "error" in r:
            print(f"{m.group:<10} {m.name:<58} {'-':>9} {'-':>8} {'-':>7} {'-':>6}  "
                  f"unavailable: {r['error']}")
            continue
        print(f"{m.group:<10} {m.name:<58} {r['peak_mib']:>9.0f} {r['peak_mib'] - base:>8.0f} "
              f"{r['peak_mib'] / base:>7.2f} {r['seconds']:>6.1f}  {r['note']}")
    over = [m.name for m, r in rows if r.get("peak_mib", 0) > 2048 and m.group == "core"]
    print(f"\nbaseline {base:.0f} MiB; Binder limit 2048 MiB; core measurements over it: "
          f"{over or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
