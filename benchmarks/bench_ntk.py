"""Benchmark: ``toolkit.ntk.empirical_ntk`` against the PyTorch tutorial's Jacobian-contraction
recipe and a naive per-sample autograd loop, all in the same process.

Problem (issue 3): MLP 64→512→512→10 (NTK parameterisation, float32) on digits, trace mode.

1. Methods at N=128 (every method, including the slow generic ones) and at N=512 (the fast
   ones); the baselines run at the largest N ≤ 512 whose Jacobians (2·N·O·P floats, the recipe
   builds J(x1) and J(x2)) fit in 45 % of the available memory. Ratios are against the tutorial
   recipe at the same N. Targets: ``auto`` ≥ 30× the recipe, within 10 % of the fastest method.
2. Scaling of ``auto`` with N = 128 … 2048 (digits has 1,797 images; N=2048 adds jittered copies).
3. Peak memory of a kernel with and without chunking (each in a fresh subprocess: peak RSS on
   the CPU, ``torch.cuda.max_memory_allocated`` on a GPU).

The "tutorial recipe" is written here from the description of the PyTorch tutorial "Neural
Tangent Kernels" (torch.func): ``vmap(jacrev(f_single))`` on x1 and on x2, then one ``einsum``
per parameter ("Naf,Maf->NM" for the trace), summed. Its trace is a sum over outputs; we divide
by O to compare with ``mode="trace"`` (a mean).

Run: ``python benchmarks/bench_ntk.py [--n 512] [--n-small 128] [--threads 2] [--quick]``.
Timings are the best of ``--repeats`` (slow baselines: one run); on a shared machine they are
noisy and inflated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from torch.func import functional_call, jacrev, vmap

from toolkit import data, models, ntk

WIDTH, DEPTH, N_OUT, IN_DIM = 512, 2, 10, 64


# ------------------------------------------------------------------------------------ problem


def make_model(seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.MLP(IN_DIM, [WIDTH] * DEPTH, N_OUT, parameterization="ntk").to(device).eval()


def make_inputs(n: int, device: str = "cpu") -> torch.Tensor:
    train, test = data.load_digits(seed=0)
    x = torch.cat([train.tensors[0], test.tensors[0]])
    g = torch.Generator().manual_seed(0)
    while len(x) < n:  # jittered copies beyond the 1,797 digits
        x = torch.cat([x, x + 0.1 * torch.randn(x.shape, generator=g)])
    return x[:n].to(device)


# ---------------------------------------------------------------------------------- baselines


def tutorial_recipe(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Jacobian contraction as in the PyTorch NTK tutorial: J(x1), J(x2), einsum per parameter."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = [j.flatten(2) for j in vmap(jacrev(f_single), (None, 0))(params, x1).values()]
    jac2 = [j.flatten(2) for j in vmap(jacrev(f_single), (None, 0))(params, x2).values()]
    kernel = torch.stack([torch.einsum("Naf,Maf->NM", a, b) for a, b in zip(jac1, jac2)]).sum(0)
    return kernel / N_OUT


def naive_loop(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """One autograd.grad call per (sample, output) to fill J row by row, then J1 J2^T / O."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x):
        rows = []
        for i in range(len(x)):
            out = model(x[i : i + 1])[0]
            for o in range(N_OUT):
                grads = torch.autograd.grad(out[o], params, retain_graph=o < N_OUT - 1)
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows).reshape(len(x), -1)

    return jacobian(x1) @ jacobian(x2).T / N_OUT  # like the recipe: J(x2) even if x2 is x1


# ------------------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, repeats: int, device: str):
    best, result = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, result


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    return 8 << 30


def jacobian_bytes(model: torch.nn.Module, n: int) -> int:
    return 2 * n * N_OUT * models.count_parameters(model) * 4


def ntk_call(method: str, **kw):
    return lambda model, x1, x2: ntk.empirical_ntk(model, x1, x2, method=method, progress=False,
                                                   **kw)


# ---------------------------------------------------------------------------------- sections


FAST = ("auto", "structured", "auto, x2 copy")


def methods_table(n: int, device: str, repeats: int, slow: bool, baselines: bool) -> list[dict]:
    """Times of every method at one N (x2 = x1 passed explicitly, as the recipe takes it).

    The fast methods are timed round-robin (``repeats`` rounds, best of each) so that a change
    of load on a shared machine hits them alike; the slow ones run once.
    """
    model, x = make_model(device=device), make_inputs(n, device)
    ntk.empirical_ntk(model, x[:8], progress=False)  # warm-up (first-call overheads)
    runs = {"auto": ntk_call("auto"), "structured": ntk_call("structured")}
    # x2 a distinct tensor: no symmetry shortcut (the recipe never uses one)
    runs["auto, x2 copy"] = lambda model, x1, x2: ntk.empirical_ntk(model, x1, x2.clone(),
                                                                     progress=False)
    if slow:
        runs |= {"jacobian": ntk_call("jacobian"), "ntk_vp": ntk_call("ntk_vp")}
    if baselines:
        runs |= {"tutorial recipe": tutorial_recipe, "naive loop": naive_loop}
    seconds, kernels = {name: float("inf") for name in runs}, {}
    for round_ in range(repeats):
        for name, fn in runs.items():
            if name not in FAST and round_ > 0:
                continue
            t, kernels[name] = best_time(lambda fn=fn: fn(model, x, x), 1, device)
            seconds[name] = min(seconds[name], t)
    reference = kernels["auto"]
    return [{"N": n, "method": name, "seconds": seconds[name],
             "rel_err_vs_auto": float((k - reference).abs().max() / reference.abs().max())}
            for name, k in kernels.items()]


def print_methods(rows: list[dict]) -> None:
    by_n: dict[int, list[dict]] = {}
    for r in rows:
        by_n.setdefault(r["N"], []).append(r)
    for n, group in by_n.items():
        times = {r["method"]: r["seconds"] for r in group}
        base = times.get("tutorial recipe")
        fastest = min(times.values())
        print(f"\nN = {n} (trace mode, float32)")
        print(f"{'method':<18}{'seconds':>10}{'vs tutorial':>14}{'vs fastest':>12}{'max rel err':>13}")
        for r in group:
            ratio = f"{base / r['seconds']:.1f}x" if base else "-"
            print(f"{r['method']:<18}{r['seconds']:>10.3f}{ratio:>14}"
                  f"{r['seconds'] / fastest:>11.2f}x{r['rel_err_vs_auto']:>13.1e}")
        ours = min(t for m, t in times.items() if m in FAST or m in ("jacobian", "ntk_vp"))
        summary = f"auto / fastest toolkit method: {times['auto'] / ours:.2f}x"
        if base:
            summary += (f"; speed-up over the recipe: {base / times['auto']:.0f}x (x2 = x1), "
                        f"{base / times['auto, x2 copy']:.0f}x (x2 a copy, like for like)")
        print(summary)


def scaling_table(ns: list[int], device: str, repeats: int) -> list[dict]:
    model = make_model(device=device)
    ntk.empirical_ntk(model, make_inputs(8, device), progress=False)
    rows = []
    for n in ns:
        x = make_inputs(n, device)
        seconds, _ = best_time(lambda x=x: ntk.empirical_ntk(model, x, progress=False), repeats,
                               device)
        rows.append({"N": n, "seconds": seconds})
    print("\nScaling of method='auto' (x2 = x1: upper block triangle only)")
    print(f"{'N':>6}{'seconds':>10}{'vs N/2':>9}")
    for i, r in enumerate(rows):
        growth = f"{r['seconds'] / rows[i - 1]['seconds']:.2f}x" if i else "-"
        print(f"{r['N']:>6}{r['seconds']:>10.3f}{growth:>9}")
    return rows


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak resident set size (Linux: write 5 to clear_refs); return the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _proc_status_kib("VmRSS") * 1024


def memory_probe(method: str, n: int, chunk: str, device: str) -> dict:
    """Run in a fresh process: peak extra memory of one kernel computation."""
    model, x = make_model(device=device), make_inputs(n, device)
    kwargs = {"chunk_size": n} if chunk == "none" else {}
    if chunk.startswith("budget="):
        kwargs = {"memory_budget": int(float(chunk.split("=")[1]) * 2**20)}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _reset_peak_rss()
    t0 = time.perf_counter()
    ntk.empirical_ntk(model, x, method=method, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _proc_status_kib("VmHWM") * 1024 - before
    return {"method": method, "N": n, "chunking": chunk, "peak_MiB": peak / 2**20,
            "seconds": seconds}


def memory_table(configs: list[tuple[str, int, str]], device: str, threads: int) -> list[dict]:
    rows = []
    for method, n, chunk in configs:
        cmd = [sys.executable, __file__, "--memory-probe", method, str(n), chunk,
               "--device", device, "--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\nPeak memory of one kernel (fresh process each)")
    print(f"{'method':<12}{'N':>6}{'chunking':>20}{'peak MiB':>10}{'seconds':>9}")
    for r in rows:
        print(f"{r['method']:<12}{r['N']:>6}{r['chunking']:>20}{r['peak_MiB']:>10.0f}"
              f"{r['seconds']:>9.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--n-small", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--memory-probe", nargs=3, metavar=("METHOD", "N", "CHUNK"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        method, n, chunk = args.memory_probe
        print(json.dumps(memory_probe(method, int(n), chunk, args.device)))
        return
    if args.quick:
        args.n, args.n_small, args.repeats = 64, 16, 1
    dev = args.device
    model = make_model(device=dev)
    print(f"MLP {IN_DIM}->{WIDTH}->{WIDTH}->{N_OUT}, {models.count_parameters(model):,} "
          f"parameters, device {dev}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    n_base = args.n
    while n_base > args.n_small and jacobian_bytes(model, n_base) > 0.45 * available_bytes(dev):
        n_base //= 2
    rows = methods_table(args.n_small, dev, args.repeats, slow=True, baselines=True)
    if n_base not in (args.n_small, args.n):
        rows += methods_table(n_base, dev, args.repeats, slow=False, baselines=True)
    rows += methods_table(args.n, dev, args.repeats, slow=False, baselines=n_base == args.n)
    if n_base != args.n:
        print(f"\nnote: the baselines' Jacobians at N={args.n} need "
              f"{jacobian_bytes(model, args.n) / 2**30:.1f} GiB (> 45 % of available memory); "
              f"they ran at N={n_base}.")
    print_methods(rows)

    ns = [16, 32, 64] if args.quick else [128, 256, 512, 1024, 2048]
    scaling_table(ns, dev, args.repeats)
    n_mem = args.n_small
    memory_table([("jacobian", n_mem, "none"), ("jacobian", n_mem, "auto"),
                  ("jacobian", n_mem, "budget=256"), ("structured", ns[-1], "none"),
                  ("structured", ns[-1], "budget=64")], dev, args.threads)


if __name__ == "__main__":
    main()
