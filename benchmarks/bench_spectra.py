"""Benchmark: ``toolkit.spectra.powerlaw_alpha`` against ``powerlaw.Fit`` (the library WeightWatcher
builds on), and ``toolkit.spectra.layer_report`` on a ResNet-18, all in the same process.

Problem (issue 6):

1. Eigenvalues of 2048×2048 trained-like, heavy-tailed matrices (the ESDs, computed once):
   i.i.d. signed Pareto entries with tail index μ = 1.5 and 2.5 (Martin & Mahoney's heavy-tailed
   random matrices, arXiv 1810.01075) and a Student-t(3) matrix plus a rank-16 signal.
   ``powerlaw_alpha(ev)`` vs ``powerlaw.Fit(ev, parameter_ranges={"alpha": [1, 50]})``: same α
   (to 1e-6) and the same xmin, and the speed ratio (target ≥ 5×). Also shown: ``powerlaw_alpha``
   without its screening (every candidate's KS distance, ``keep_candidates=True``) and the
   ``powerlaw`` 2.x default range α ∈ [0, 3] against ``powerlaw_alpha(ev, alpha_range=(0, 3))``.
2. ``layer_report`` time for ``toolkit.models.ResNet18`` (CIFAR-style, width 64, 21 weight
   layers, WeightWatcher's per-slice conv ESDs), split into the SVDs and the fits, and the fit of
   its largest layer by ``powerlaw.Fit`` vs ``powerlaw_alpha``. ``--full-baseline`` also times the
   whole report with ``powerlaw.Fit`` doing every fit (about 20 s on an idle 2-core machine,
   many minutes on a busy one).

Run: ``python benchmarks/bench_spectra.py [--threads 2] [--repeats 5] [--part all|fits|report]
[--full-baseline]``. ``powerlaw`` is a dev dependency (``pip install -e .[dev]``). Timings are the
best of ``--repeats`` (``powerlaw``: best of 2); on a shared machine they are noisy and inflated.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from toolkit import models, spectra

N = 2048


def heavy_tailed_matrices(seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(N, N))
    low_rank = rng.standard_normal((N, 16)) @ rng.standard_normal((16, N)) / 4
    return {
        "pareto mu=1.5": torch.from_numpy(signs * rng.pareto(1.5, size=(N, N))),
        "pareto mu=2.5": torch.from_numpy(signs * rng.pareto(2.5, size=(N, N))),
        "student-t(3) + rank 16": torch.from_numpy(rng.standard_t(3, size=(N, N)) + low_rank),
    }


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def powerlaw_fit(ev, alpha_range=(1, 50)):
    import powerlaw

    ranges = None if alpha_range is None else {"alpha": list(alpha_range)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(np.asarray(ev), parameter_ranges=ranges, verbose=0)


def bench_fits(repeats: int) -> None:
    print(f"\n1. Power-law fits on the ESDs of {N}x{N} heavy-tailed matrices "
          f"({N} eigenvalues each)")
    header = (f"{'matrix':24s} {'method':34s} {'time (s)':>9s} {'vs powerlaw':>11s} "
              f"{'alpha':>10s} {'xmin':>12s} {'|d alpha|':>9s} {'same xmin':>9s}")
    print(header)
    print("-" * len(header))
    for name, w in heavy_tailed_matrices().items():
        t0 = time.perf_counter()
        ev = spectra.esd(w).numpy()
        t_esd = time.perf_counter() - t0
        t_ref, ref = best_time(lambda ev=ev: powerlaw_fit(ev), 2)
        rows = [("powerlaw.Fit, alpha in [1, 50]", t_ref, ref.alpha, ref.xmin, ref.alpha, ref.xmin)]
        t, fit = best_time(lambda ev=ev: spectra.powerlaw_alpha(ev), repeats)
        rows.append(("powerlaw_alpha", t, fit.alpha, fit.xmin, ref.alpha, ref.xmin))
        t, fit = best_time(lambda ev=ev: spectra.powerlaw_alpha(ev, keep_candidates=True),
                           repeats)
        rows.append(("powerlaw_alpha, no screening", t, fit.alpha, fit.xmin, ref.alpha, ref.xmin))
        t_def, ref_def = best_time(lambda ev=ev: powerlaw_fit(ev, None), 2)
        rows.append(("powerlaw.Fit, default [0, 3]", t_def, ref_def.alpha, ref_def.xmin,
                     ref_def.alpha, ref_def.xmin))
        t, fit = best_time(lambda ev=ev: spectra.powerlaw_alpha(ev, alpha_range=(0, 3)), repeats)
        rows.append(("powerlaw_alpha, alpha_range=(0, 3)", t, fit.alpha, fit.xmin,
                     ref_def.alpha, ref_def.xmin))
        for i, (method, t, alpha, xmin, ref_alpha, ref_xmin) in enumerate(rows):
            base = t_ref if i < 3 else t_def
            print(f"{name if i == 0 else '':24s} {method:34s} {t:9.4f} {base / t:10.1f}x "
                  f"{alpha:10.4f} {xmin:12.5g} {abs(alpha - ref_alpha):9.1e} "
                  f"{str(xmin == ref_xmin):>9s}")
        print(f"{'':24s} (esd: {t_esd:.2f} s for the SVD)")


def bench_report(repeats: int, full_baseline: bool) -> None:
    torch.manual_seed(0)
    model = models.ResNet18(n_classes=10, width=64).eval()
    layers = list(spectra.weight_layers(model))
    n_eigs = sum(int(spectra.esd(m).numel()) for _, m in layers)
    print(f"\n2. layer_report on ResNet18 (width 64, random init): {len(layers)} weight layers, "
          f"{n_eigs} eigenvalues (per-slice conv ESDs)")
    header = f"{'step':52s} {'time (s)':>9s} {'vs powerlaw':>11s}"
    print(header)
    print("-" * len(header))
    t_esd, _ = best_time(lambda: [spectra.esd(m) for _, m in layers], repeats)
    t_fast, _ = best_time(lambda: spectra.layer_report(model, randomize=False), repeats)
    t_rand, _ = best_time(lambda: spectra.layer_report(model, randomize=True), repeats)
    name, big = max(layers, key=lambda nm: spectra.esd(nm[1]).numel())
    ev = spectra.esd(big).numpy()
    t_ref, ref = best_time(lambda: powerlaw_fit(ev), 1)
    t_ours, fit = best_time(lambda: spectra.powerlaw_alpha(ev), repeats)
    agree = abs(fit.alpha - ref.alpha) < 1e-6 and fit.xmin == ref.xmin
    print(f"{'ESDs of all layers (SVDs only)':52s} {t_esd:9.2f} {'-':>11s}")
    print(f"{'layer_report(randomize=False)':52s} {t_fast:9.2f} {'-':>11s}")
    print(f"{'layer_report(randomize=True) (shuffled copies too)':52s} {t_rand:9.2f} {'-':>11s}")
    label = f"largest layer {name} ({len(ev)} eigs): powerlaw.Fit"
    print(f"{label:52s} {t_ref:9.2f} {1.0:10.1f}x")
    label = f"largest layer {name}: powerlaw_alpha (agree: {agree})"
    print(f"{label:52s} {t_ours:9.4f} {t_ref / t_ours:10.1f}x")
    if full_baseline:
        original = spectra.powerlaw_alpha

        def via_powerlaw(ev, alpha_range=(1.0, 50.0), **_):
            f = powerlaw_fit(np.asarray(ev), alpha_range)
            return spectra.PowerLawFit(alpha=f.alpha, xmin=f.xmin, ks=f.D, n_tail=int(f.n_tail),
                                       sigma=f.sigma)

        spectra.powerlaw_alpha = via_powerlaw
        try:
            t_base, _ = best_time(lambda: spectra.layer_report(model, randomize=False), 1)
        finally:
            spectra.powerlaw_alpha = original
        print(f"{'layer_report with powerlaw.Fit doing the fits':52s} {t_base:9.2f} "
              f"{t_base / t_fast:10.1f}x (slower than ours)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=("all", "fits", "report"), default="all")
    parser.add_argument("--full-baseline", action="store_true",
                        help="also time the whole layer_report with powerlaw.Fit doing the fits "
                             "(slow: ~20 s idle, minutes on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import powerlaw

    print(f"torch {torch.__version__}, powerlaw {powerlaw.__version__}, numpy {np.__version__}, "
          f"{args.threads} threads")
    if args.part in ("all", "fits"):
        bench_fits(args.repeats)
    if args.part in ("all", "report"):
        bench_report(args.repeats, args.full_baseline)


if __name__ == "__main__":
    main()
