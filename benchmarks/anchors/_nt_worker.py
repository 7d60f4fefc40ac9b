"""Worker for ntk_vs_neural_tangents.py, run by the neural-tangents venv's python.

argv: npz with ``case`` and that case's weights and x; the implementations to time (e.g. "3" or
"123"). Cases, each the network ours computes, in the same parameterisation:
- ``mlp``: Dense layers with ReLU between, NTK parameterisation (``W{i}`` as (in, out), ``b{i}``,
  ``n_layers``, ``sigma_w``).
- ``cnn``: in torch's NCHW/OIHW layout, standard parameterisation (as ``nn.Conv2d``/``nn.Linear``):
  Conv(16, 3x3, SAME) - ReLU - Conv(32, 3x3, SAME) - ReLU - AvgPool(2x2) - Flatten (C, H, W order,
  as ``nn.Flatten``) - Dense(10); ``C0``/``c0``, ``C1``/``c1`` (OIHW conv weights, biases),
  ``W``/``b`` (Dense, W as (in, out)), ``x`` (N, 1, 8, 8).
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
jnp = jax.numpy


def mlp(blob):
    n_layers = int(blob["n_layers"])
    layers, params = [], []
    for i in range(n_layers):
        layers.append(stax.Dense(int(blob[f"W{i}"].shape[1]), W_std=float(blob["sigma_w"]),
                                 b_std=0.0, parameterization="ntk"))
        params.append((jnp.asarray(blob[f"W{i}"]), jnp.asarray(blob[f"b{i}"])))
        if i < n_layers - 1:
            layers.append(stax.Relu())
            params.append(())
    return layers, params


def cnn(blob):
    dims = ("NCHW", "OIHW", "NCHW")
    layers, params = [], []
    for i in range(2):
        w = blob[f"C{i}"]
        layers += [stax.Conv(int(w.shape[0]), (3, 3), padding="SAME", dimension_numbers=dims,
                             parameterization="standard", b_std=1.0), stax.Relu()]
        params += [(jnp.asarray(w), jnp.asarray(blob[f"c{i}"]).reshape(1, -1, 1, 1)), ()]
    layers += [stax.AvgPool((2, 2), (2, 2), batch_axis=0, channel_axis=1), stax.Flatten(),
               stax.Dense(int(blob["W"].shape[1]), parameterization="standard", b_std=1.0)]
    params += [(), (), (jnp.asarray(blob["W"]), jnp.asarray(blob["b"]))]
    return layers, params


blob = np.load(sys.argv[1])
layers, params = {"mlp": mlp, "cnn": cnn}[str(blob["case"])](blob)
_, apply_fn, _ = stax.serial(*layers)
x = jnp.asarray(blob["x"])
fns = {}
for impl in sys.argv[2]:
    f = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                    implementation=int(impl)))
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
