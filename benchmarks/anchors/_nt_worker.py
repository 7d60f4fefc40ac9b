"""Worker for ntk_vs_neural_tangents.py, run by the neural-tangents venv's python.

argv: npz with the weights (W_i as (in, out), b_i) and x; the implementations to time (e.g. "3"
or "123").
Protocol on stdin/stdout, one line each: "go <impl>" -> JSON {"s": wall seconds} of one jitted
call (compiled beforehand, result blocked on); "dump <impl> <path>" saves that kernel; "quit".
"""

import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

jax.config.update("jax_platform_name", "cpu")
blob = np.load(sys.argv[1])
n_layers = int(blob["n_layers"])
layers = []
for i in range(n_layers):
    layers.append(stax.Dense(int(blob[f"W{i}"].shape[1]), W_std=float(blob["sigma_w"]), b_std=0.0,
                             parameterization="ntk"))
    if i < n_layers - 1:
        layers.append(stax.Relu())
_, apply_fn, _ = stax.serial(*layers)
params, k = [], 0
for i in range(n_layers):
    params.append((jax.numpy.asarray(blob[f"W{i}"]), jax.numpy.asarray(blob[f"b{i}"])))
    if i < n_layers - 1:
        params.append(())
x = jax.numpy.asarray(blob["x"])
fns = {}
for impl in sys.argv[2]:
    f = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=int(impl)))
    f(x, None, params).block_until_ready()  # compile
    fns[impl] = f
print(json.dumps({"ready": True, "jax": jax.__version__}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "quit":
        break
    if cmd[0] == "go":
        t0 = time.perf_counter()
        fns[cmd[1]](x, None, params).block_until_ready()
        print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
    elif cmd[0] == "dump":
        np.save(cmd[2], np.asarray(fns[cmd[1]](x, None, params)))
        print(json.dumps({"ok": True}), flush=True)
