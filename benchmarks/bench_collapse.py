"""Benchmark: neural-collapse metrics at N=50,000, d=512, C=100.

Compares ``toolkit.collapse.nc_metrics`` (in-memory features, chunked) and the two-pass
``CollapseAccumulator`` (features arriving in batches) with a straightforward NumPy reference that
builds the d x d within-class covariance from all samples and takes a full pseudo-inverse of the
d x d between-class covariance (``np.linalg.pinv(..., rtol=None)``, the Array-API tolerance
max(d, d)·eps). All compute the same metrics (NC1, NC2 x3, NC3, NC4, CDNV) in float64.

Times: the methods run round-robin ``--repeats`` times in one process, so a change of machine
load affects all of them alike; the speed-up is the ratio of best times, "paired" the median over
rounds of the ratio within a round. Memory: each method runs once more in a fresh
subprocess, whose peak resident memory above the loaded data (``ru_maxrss``) is reported.

    python benchmarks/bench_collapse.py [--n 50000 --d 512 --c 100 --repeats 3 --threads 1]

Not part of pytest; timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

METRICS = ("nc1", "equinorm_means", "equiangularity", "etf_error", "cdnv", "self_duality",
           "ncc_mismatch")


def make_data(n, d, c, seed=0):
    """float32 features = class centre + unit noise, built in row blocks (no float64 temporaries,
    so the peak memory measured afterwards belongs to the method, not to the data)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    centres = rng.standard_normal((c, d)) * 2.0
    feats = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 4096):
        block = labels[s:s + 4096]
        feats[s:s + 4096] = centres[block] + rng.standard_normal((len(block), d))
    weight = (centres + 0.5 * rng.standard_normal((c, d))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(c)).astype(np.float32)
    return feats, labels, weight, bias


def reference(h, y, w, b, c):
    """The definitions, the obvious way: full Sigma_W (d x d) and pinv(Sigma_B) (d x d)."""
    h = h.astype(np.float64)
    n = len(y)
    mu = np.stack([h[y == k].mean(0) for k in range(c)])
    g = mu.mean(0)
    m = mu - g
    r = h - mu[y]
    sigma_w = r.T @ r / n
    sigma_b = m.T @ m / c
    # rtol=None: the Array-API cut max(d, d)·eps. NumPy's default rcond=1e-15 can keep the
    # numerically-zero eigenvalues of this rank-(C-1) matrix and blow NC1 up.
    pinv = np.linalg.pinv(sigma_b, rtol=None, hermitian=True)
    out = {"nc1": float(np.trace(sigma_w @ pinv) / c)}
    norms = np.linalg.norm(m, axis=1)
    out["equinorm_means"] = float(norms.std() / norms.mean())
    cos = (m @ m.T) / np.outer(norms, norms)
    off = ~np.eye(c, dtype=bool)
    out["equiangularity"] = float(np.abs(cos[off] + 1 / (c - 1)).mean())
    gram = m @ m.T
    out["etf_error"] = float(np.linalg.norm(gram / np.linalg.norm(gram)
                                            - (np.eye(c) - 1 / c) / np.sqrt(c - 1)))
    var = np.array([(r[y == k] ** 2).sum(1).mean() for k in range(c)])
    dist = ((mu[:, None, :] - mu[None]) ** 2).sum(-1)
    out["cdnv"] = float((((var[:, None] + var[None]) / 2)[off] / dist[off]).mean())
    if w is None:  # NC1, NC2, CDNV only
        return out
    w = w.astype(np.float64)
    out["self_duality"] = float(((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2).sum())
    pred = (h @ w.T + b).argmax(1)
    d2 = (h**2).sum(1)[:, None] - 2 * h @ mu.T + (mu**2).sum(1)[None]
    out["ncc_mismatch"] = float(np.mean(d2.argmin(1) != pred))
    return out


METHODS = ("reference", "nc_metrics", "accumulator", "reference_no_w", "nc_metrics_no_w")


def _methods(args):
    """Loads the data and returns {name: zero-argument callable returning a metrics dict}."""
    import torch
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    torch.set_num_threads(args.threads)
    # NumPy's BLAS read OPENBLAS_NUM_THREADS when numpy was imported (before main() set it), so
    # limit it here too: otherwise the reference would run on more threads than the toolkit
    threadpool_limits(limits=args.threads, user_api="blas")
    from toolkit import collapse

    feats, labels, weight, bias = make_data(args.n, args.d, args.c)
    device = torch.device(args.device)
    tf, tl = torch.from_numpy(feats).to(device), torch.from_numpy(labels).to(device)
    tw, tb = torch.from_numpy(weight).to(device), torch.from_numpy(bias).to(device)

    def accumulator():
        acc = collapse.CollapseAccumulator(args.c, weight=tw, bias=tb)
        for s in range(0, args.n, args.batch):
            acc.update_means(tf[s:s + args.batch], tl[s:s + args.batch])
        for s in range(0, args.n, args.batch):
            acc.update_residuals(tf[s:s + args.batch], tl[s:s + args.batch])
        return acc.compute().as_dict()

    def sync(fn):
        def run():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out
        return run

    return {
        "reference": lambda: reference(feats, labels, weight, bias, args.c),
        "nc_metrics": sync(lambda: collapse.nc_metrics(tf, tl, weight=tw, bias=tb).as_dict()),
        "accumulator": sync(accumulator),
        "reference_no_w": lambda: reference(feats, labels, None, None, args.c),
        "nc_metrics_no_w": sync(lambda: collapse.nc_metrics(tf, tl).as_dict()),
    }


def _memory_worker(method, args, queue):
    """Peak resident memory of one run of ``method`` above the loaded data (fresh process)."""
    fn = _methods(args)[method]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)


def peak_memory(method, args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(method, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def timings(args):
    """Round-robin over the methods ``repeats`` times in one process, rotating the order (so load
    drifts and cache/allocator effects hit all alike); every time and the last result of each."""
    fns = _methods(args)
    times, results = {m: [] for m in fns}, {}
    names = list(fns)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            fn = fns[name]
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            results[name] = {k: out[k] for k in METRICS if out.get(k) is not None}
    return times, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--c", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024, help="accumulator batch size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads for both sides (1 = fair on a loaded machine)")
    parser.add_argument("--device", default="cpu", help="device for the toolkit methods")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the spawned workers before numpy loads
    # spinning OpenMP workers are preempted on a shared machine and slow small ops 10x
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    print(f"N={args.n:,}  d={args.d}  C={args.c}  float32 features  threads={args.threads}  "
          f"toolkit device={args.device}  (best of {args.repeats})", flush=True)
    # memory first: a process forked from a large parent inherits its peak RSS (ru_maxrss)
    memory = {m: peak_memory(m, args) for m in METHODS}
    times, metrics = timings(args)
    results = {m: {"time": min(times[m]), "times": times[m], "extra_mib": memory[m],
                   "metrics": metrics[m]} for m in METHODS}
    # speed-up = best reference time / best time; "paired" = median over rounds of the ratio
    # within the round (robust when the machine's speed drifts during the run)
    header = (f"{'method':28s} {'time [s]':>9s} {'speed-up':>9s} {'paired':>7s} "
              f"{'peak extra MiB':>15s} {'max rel. diff vs reference':>27s}")
    for title, ref_name, names in (
            ("all metrics (NC1-NC4, CDNV; weight and bias given)", "reference",
             ("reference", "nc_metrics", "accumulator")),
            ("NC1, NC2 and CDNV only (no classifier)", "reference_no_w",
             ("reference_no_w", "nc_metrics_no_w"))):
        ref = results[ref_name]
        print(f"\n{title}")
        print(header)
        print("-" * len(header))
        for name in names:
            res = results[name]
            rel = max(abs(res["metrics"][k] - ref["metrics"][k])
                      / max(abs(ref["metrics"][k]), 1e-300) for k in ref["metrics"])
            paired = float(np.median(np.array(ref["times"]) / np.array(res["times"])))
            print(f"{name:28s} {res['time']:9.3f} {ref['time'] / res['time']:8.1f}x "
                  f"{paired:6.1f}x {res['extra_mib']:15.1f} {rel:27.2e}")
    print()
    names = ("reference", "nc_metrics", "accumulator")
    print(f"{'metric':16s} " + " ".join(f"{m:>20s}" for m in names))
    for k in METRICS:
        print(f"{k:16s} " + " ".join(f"{results[m]['metrics'][k]:20.12g}" for m in names))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
