"""Tests for toolkit.collapse: each one fails if the mathematics is wrong (exact configurations,
closed forms, agreement with an independent definitional implementation, invariances,
streaming == batch, and the qualitative results of the papers at toy scale)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import collapse, data, models, train

METRICS = ("nc1", "equinorm_means", "equiangularity", "etf_error", "cdnv")


# ------------------------------------------------------------------------------------ helpers
def mixture(n_per_class, dim, *, spread=1.0, seed=0, dtype=torch.float64):
    """Gaussian blobs around random centres; n_per_class may be an int or a list."""
    gen = torch.Generator().manual_seed(seed)
    counts = [n_per_class] * 5 if isinstance(n_per_class, int) else list(n_per_class)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    centres = 3 * torch.randn(len(counts), dim, generator=gen, dtype=dtype)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=gen, dtype=dtype)
    perm = torch.randperm(len(labels), generator=gen)
    return feats[perm], labels[perm]


def reference_metrics(h, y, w=None, b=None, global_mean="class_means"):
    """The definitions, written the slow obvious way in NumPy: full d x d Sigma_W from all
    samples, d x d Sigma_B, a pseudo-inverse with an explicit rank cut, explicit distances."""
    h = np.asarray(h, dtype=np.float64)
    y = np.asarray(y)
    c = y.max() + 1
    n = len(y)
    mu = np.stack([h[y == k].mean(0) for k in range(c)])
    g = mu.mean(0) if global_mean == "class_means" else h.mean(0)
    m = mu - g
    r = h - mu[y]
    sigma_w = r.T @ r / n
    sigma_b = m.T @ m / c
    evals, evecs = np.linalg.eigh(sigma_b)
    keep = evals > 1e-10 * evals.max()
    pinv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    out = {"nc1": np.trace(sigma_w @ pinv) / c}
    norms = np.linalg.norm(m, axis=1)
    out["equinorm_means"] = norms.std() / norms.mean()
    cos = (m @ m.T) / np.outer(norms, norms)
    off = ~np.eye(c, dtype=bool)
    out["equiangularity"] = np.abs(cos[off] + 1 / (c - 1)).mean()
    gram = m @ m.T
    out["etf_error"] = np.linalg.norm(gram / np.linalg.norm(gram)
                                      - (np.eye(c) - 1 / c) / np.sqrt(c - 1))
    var = np.array([((h[y == k] - mu[k]) ** 2).sum(1).mean() for k in range(c)])
    cdnv = [(var[i] + var[j]) / (2 * ((mu[i] - mu[j]) ** 2).sum())
            for i in range(c) for j in range(c) if i != j]
    out["cdnv"] = np.mean(cdnv)
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        logits = h @ w.T + (0 if b is None else np.asarray(b, dtype=np.float64))
        dist = ((h[:, None, :] - mu[None]) ** 2).sum(-1)
        out["ncc_mismatch"] = np.mean(dist.argmin(1) != logits.argmax(1))
        out["self_duality"] = ((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2).sum()
        wn = np.linalg.norm(w, axis=1)
        out["equinorm_weights"] = wn.std() / wn.mean()
    return out


def random_rotation(d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


# ------------------------------------------------------------------------ exact configurations
@pytest.mark.parametrize("c,d", [(3, 3), (5, 8), (10, 16)])
def test_exact_simplex_etf_gives_zero_everywhere(c, d):
    etf = 2.5 * collapse.simplex_etf(c, d, seed=1)
    shift = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(c).repeat(7)
    feats = etf[labels] + shift  # zero within-class spread, translated simplex
    bias = -(etf @ shift)  # makes argmax(h W^T + b) the true class
    m = collapse.nc_metrics(feats, labels, weight=etf, bias=bias)
    for name in ("nc1", "equinorm_means", "equiangularity", "etf_error", "cdnv",
                 "equinorm_weights", "equiangularity_weights", "self_duality", "ncc_mismatch"):
        assert abs(getattr(m, name)) < 1e-10, (name, getattr(m, name))


def test_simplex_etf_is_an_etf():
    e = collapse.simplex_etf(6, 9, seed=3)
    gram = e @ e.T
    assert torch.allclose(torch.diagonal(gram), torch.ones(6, dtype=e.dtype))
    off = gram[~torch.eye(6, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 5))
    assert torch.allclose(e.sum(0), torch.zeros(9, dtype=e.dtype), atol=1e-12)


def test_random_features_are_far_from_collapse():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 20, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (500,), generator=gen)
    w = torch.randn(5, 20, generator=gen, dtype=torch.float64)
    m = collapse.nc_metrics(feats, labels, weight=w)
    assert m.nc1 > 1.0  # no class structure: within >> between
    assert m.etf_error > 0.1 and m.equiangularity > 0.1
    assert m.self_duality > 0.5 and m.ncc_mismatch > 0.3 and m.cdnv > 1.0


def test_nc1_and_cdnv_closed_form_two_classes():
    # 1-D: class 0 at -1 +- s, class 1 at +1 +- s: mu_G = 0, Sigma_B = 1, Sigma_W = s^2.
    s = 0.3
    feats = torch.tensor([[-1 - s], [-1 + s], [1 - s], [1 + s]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    m = collapse.nc_metrics(feats, labels)
    assert m.nc1 == pytest.approx(s**2 / 2, rel=1e-12)
    # CDNV = (Var_0 + Var_1) / (2 ||mu_0 - mu_1||^2) = (s^2 + s^2) / (2 * 4)
    assert m.cdnv == pytest.approx(2 * s**2 / 8, rel=1e-12)
    assert m.tr_within == pytest.approx(s**2) and m.tr_between == pytest.approx(1.0)


# ------------------------------------------------------- agreement with the definitional code
@pytest.mark.parametrize("global_mean", collapse.GLOBAL_MEANS)
@pytest.mark.parametrize("counts", [[40] * 5, [80, 60, 30, 12, 5]])
def test_matches_definitional_reference(global_mean, counts):
    feats, labels = mixture(counts, 12, seed=4)
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    ours = collapse.nc_metrics(feats, labels, weight=w, bias=b, global_mean=global_mean,
                               chunk_size=37)
    ref = reference_metrics(feats.numpy(), labels.numpy(), w.numpy(), b.numpy(), global_mean)
    for name, value in ref.items():
        assert getattr(ours, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_nc1_when_d_smaller_than_c_minus_1():
    # Sigma_B has full rank d < C-1: the identity Tr(Sigma_W Sigma_B^+) = (C/N)||R M^+||^2 holds.
    feats, labels = mixture([30] * 5, 2, seed=6)
    ours = collapse.nc_metrics(feats, labels)
    ref = reference_metrics(feats.numpy(), labels.numpy())
    assert ours.nc1 == pytest.approx(ref["nc1"], rel=1e-10)


def test_global_mean_conventions_agree_balanced_differ_imbalanced():
    feats, labels = mixture([50] * 5, 6, seed=7)
    a = collapse.nc_metrics(feats, labels, global_mean="class_means")
    b = collapse.nc_metrics(feats, labels, global_mean="samples")
    for name in METRICS:
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-10)
    feats, labels = mixture([200, 100, 20, 10, 5], 6, seed=7)
    a = collapse.nc_metrics(feats, labels, global_mean="class_means")
    b = collapse.nc_metrics(feats, labels, global_mean="samples")
    assert abs(a.nc1 - b.nc1) > 1e-3 * a.nc1
    assert abs(a.etf_error - b.etf_error) > 1e-3
    assert a.cdnv == pytest.approx(b.cdnv)  # CDNV does not use the global mean


# ----------------------------------------------------------------------------------- invariance
def test_invariant_to_rotation_scaling_translation():
    feats, labels = mixture([30, 40, 50, 20, 60], 10, seed=8)
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    q = random_rotation(10, seed=10)
    base = collapse.nc_metrics(feats, labels, weight=w)
    rotated = collapse.nc_metrics(3.7 * feats @ q.T, labels, weight=w @ q.T)
    shifted = collapse.nc_metrics(feats + 5.0, labels)
    # far from the origin the centred means carry rounding noise ~eps * 1e4 in a null direction,
    # which the rank cut must drop (a cut relative to s_max alone kept it: NC1 ~ 1e19)
    far = collapse.nc_metrics(feats + 1e4, labels)
    for name in (*METRICS, "self_duality", "ncc_mismatch", "equinorm_weights"):
        assert getattr(rotated, name) == pytest.approx(getattr(base, name), rel=1e-9), name
    for name in METRICS:
        assert getattr(shifted, name) == pytest.approx(getattr(base, name), rel=1e-9), name
        assert getattr(far, name) == pytest.approx(getattr(base, name), rel=1e-6), name


# ------------------------------------------------------------------------------ streaming
def _stream(feats, labels, splits1, splits2, perm, **kwargs):
    acc = collapse.CollapseAccumulator(5, **kwargs)
    for chunk_f, chunk_y in zip(torch.tensor_split(feats, splits1),
                                torch.tensor_split(labels, splits1)):
        acc.update_means(chunk_f, chunk_y)
    f2, y2 = feats[perm], labels[perm]  # pass 2 in another order and batching
    for chunk_f, chunk_y in zip(torch.tensor_split(f2, splits2), torch.tensor_split(y2, splits2)):
        acc.update_residuals(chunk_f, chunk_y)
    return acc.compute()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 299), max_size=6), st.lists(st.integers(1, 299), max_size=6),
       st.integers(0, 10_000), st.sampled_from(collapse.GLOBAL_MEANS))
def test_streaming_equals_batch(splits1, splits2, seed, global_mean):
    feats, labels = mixture([60, 70, 80, 50, 40], 7, seed=11)
    w = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(seed))
    streamed = _stream(feats, labels, sorted(splits1), sorted(splits2), perm, weight=w,
                       global_mean=global_mean)
    batch = collapse.nc_metrics(feats, labels, weight=w, global_mean=global_mean,
                                chunk_size=10_000)
    for name in (*METRICS, "self_duality", "ncc_mismatch", "tr_within"):
        assert getattr(streamed, name) == pytest.approx(getattr(batch, name), rel=1e-11), name


def test_merge_and_reduce_make_sharded_equal_to_single():
    feats, labels = mixture([40] * 5, 6, seed=13)
    halves = [(feats[:100], labels[:100]), (feats[100:], labels[100:])]
    single = collapse.nc_metrics(feats, labels)
    # two "ranks", combined with a fake all-reduce that sums the statistics of both
    ranks = [collapse.CollapseAccumulator(5) for _ in halves]
    for passes in range(2):
        for acc, (f, y) in zip(ranks, halves):
            (acc.update_means if passes == 0 else acc.update_residuals)(f, y)
        totals = {k: sum(a.statistics()[k] for a in ranks) for k in ranks[0].statistics()}
        for acc in ranks:
            for k, t in acc.statistics().items():
                t.copy_(totals[k])
        if passes == 0:
            for acc in ranks:
                acc.end_first_pass()
    for acc in ranks:
        m = acc.compute()
        for name in METRICS:
            assert getattr(m, name) == pytest.approx(getattr(single, name), rel=1e-12)
    # merge(): same result
    a, b = collapse.CollapseAccumulator(5), collapse.CollapseAccumulator(5)
    a.update_means(*halves[0])
    b.update_means(*halves[1])
    a.merge(b)
    a.update_residuals(feats, labels)
    assert a.compute().nc1 == pytest.approx(single.nc1, rel=1e-12)


def test_accumulator_memory_is_independent_of_n():
    acc = collapse.CollapseAccumulator(5)
    feats, labels = mixture([400] * 5, 6, seed=14)
    acc.update_means(feats, labels)
    acc.update_residuals(feats, labels)
    sizes = sum(t.numel() for t in acc.statistics().values())
    assert sizes <= 5 + 3 + 5  # counts2, three scalars, class energies: O(C), no O(N) state


def test_within_covariance_option_matches_definition():
    feats, labels = mixture([30] * 5, 4, seed=15)
    acc = collapse.CollapseAccumulator(5, within_covariance=True)
    acc.update_means(feats, labels)
    acc.update_residuals(feats, labels)
    means, _, _ = collapse.class_means(feats, labels)
    r = feats - means[labels]
    assert torch.allclose(acc.within_cov(), r.T @ r / len(r))


def test_second_pass_must_see_the_same_data():
    feats, labels = mixture([30] * 5, 4, seed=16)
    acc = collapse.CollapseAccumulator(5)
    acc.update_means(feats, labels)
    acc.update_residuals(feats[:50], labels[:50])
    with pytest.raises(RuntimeError, match="second pass"):
        acc.compute()


def test_non_finite_features_are_refused_with_the_argument_and_the_fix():
    feats, labels = mixture([10] * 5, 3, seed=17)
    feats[3, 0] = float("nan")
    feats[7, 1] = float("inf")
    pattern = r"features has 2 non-finite values .* in 2 of 50 rows \(first: \[3, 7\]\).*drop"
    with pytest.raises(ValueError, match=pattern):
        collapse.nc_metrics(feats, labels)
    with pytest.raises(ValueError, match="features has 2 non-finite"):
        collapse.class_means(feats, labels)
    acc = collapse.CollapseAccumulator(5)
    with pytest.raises(ValueError, match="features has 2 non-finite"):
        acc.update_means(feats, labels)
    weight = torch.randn(5, 3, dtype=torch.float64)
    weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight has 1 non-finite"):
        collapse.nc_metrics(feats.nan_to_num(), labels, weight=weight)


def test_labels_out_of_range_name_the_fix():
    feats, labels = mixture([10] * 5, 3, seed=17)
    with pytest.raises(ValueError, match=r"labels out of range.*\[0, 4\).*max 4.*n_classes="):
        collapse.nc_metrics(feats, labels, n_classes=4)
    with pytest.raises(ValueError, match="min -1"):
        collapse.nc_metrics(feats, labels - 1, n_classes=5)
    with pytest.raises(ValueError, match=r"labels out of range.*\[0, 3\)"):
        collapse.nc_metrics(feats, labels, weight=torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"labels.long\(\)"):
        collapse.nc_metrics(feats, labels.double())


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (300.0, 1e-3)])
def test_float32_features_give_the_float64_numbers(offset, spread):
    """Float32 features run the O(N d C) products in float32 (residuals formed first, rounding of
    the means removed exactly) and must still match the float64 computation on the *same* values
    -- also for nearly collapsed features far from the origin, where the float32 class means are
    off by ~1 % of the residuals and forgetting the correction moves NC1 by ~1e-3."""
    feats, labels = mixture([50] * 5, 8, spread=spread, seed=18)
    feats32 = (feats + offset).float()
    weight = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)).float()
    bias = torch.randn(5, generator=torch.Generator().manual_seed(2)).float()
    m32 = collapse.nc_metrics(feats32, labels, weight=weight, bias=bias, chunk_size=64)
    m64 = collapse.nc_metrics(feats32.double(), labels, weight=weight.double(),
                              bias=bias.double())
    for name, value in m64.as_dict().items():
        if isinstance(value, float):
            assert m32.as_dict()[name] == pytest.approx(value, rel=1e-6, abs=1e-12), name
    assert m32.nc1 != m64.nc1  # the float32 path really ran


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_logits_from_residuals_are_the_classifiers_decisions(offset):
    """NC4 computes h W^T + b as r^ W^T + (mu^_y W^T + b) to share a product with NC1; its
    decisions must be the network's own argmax(h W^T + b) (given explicitly as predictions)."""
    feats, labels = mixture([80, 60, 70, 90, 50], 12, spread=1.5, seed=19)
    feats = (feats + offset).float()
    gen = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(5, 12, generator=gen), 3 * torch.randn(5, generator=gen)
    internal = collapse.nc_metrics(feats, labels, weight=weight, bias=bias, chunk_size=37)
    explicit = collapse.nc_metrics(feats, labels, weight=weight,
                                   predictions=(feats @ weight.T + bias).argmax(1))
    assert 0.05 < internal.ncc_mismatch < 0.95  # decisions differ from NCC: a real comparison
    assert internal.ncc_mismatch == explicit.ncc_mismatch


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad,match", [
    (dict(labels=torch.tensor([0, 1, 3])), "out of range"),
    (dict(labels=torch.tensor([0, -1, 1])), "out of range"),
    (dict(labels=torch.tensor([0, 1, 1]), n_classes=3), "no samples"),
    (dict(features=torch.zeros(3, 2, 2)), "2-D"),
    (dict(labels=torch.tensor([0, 1])), "mismatched lengths"),
    (dict(global_mean="median"), "global_mean"),
    (dict(weight=torch.zeros(3, 5)), "columns"),
    (dict(weight=torch.zeros(2, 2)), "rows"),
    (dict(weight=torch.zeros(3, 2), bias=torch.zeros(2)), "bias"),
])
def test_clear_value_errors(bad, match):
    kwargs = dict(features=torch.randn(3, 2), labels=torch.tensor([0, 1, 2]), n_classes=3)
    kwargs.update(bad)
    f, y = kwargs.pop("features"), kwargs.pop("labels")
    with pytest.raises(ValueError, match=match):
        collapse.nc_metrics(f, y, **kwargs)


def test_type_errors():
    with pytest.raises(TypeError, match="labels"):
        collapse.nc_metrics(torch.randn(3, 2), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(TypeError, match="features"):
        collapse.nc_metrics([[0.0, 1.0]], torch.tensor([0]))
    with pytest.raises(ValueError, match="n_classes"):
        collapse.CollapseAccumulator(1)


# ------------------------------------------------------------------------ models and callbacks
def _tiny_problem():
    train_set, _ = data.gaussian_mixture(n_samples=240, n_classes=4, dim=5, seed=0)
    torch.manual_seed(0)
    return train_set, models.MLP(5, [16], 4)


def test_extract_features_hooks_the_input_of_the_head():
    train_set, net = _tiny_problem()
    feats, labels = collapse.extract_features(net, train_set)
    x, y = train_set.tensors
    with torch.no_grad():
        assert torch.allclose(feats, net.features(x))
    assert torch.equal(labels, y)
    loader = torch.utils.data.DataLoader(train_set, batch_size=17)
    streamed, _ = collapse.extract_features(net, loader)
    assert torch.allclose(streamed, feats)


def test_layer_inputs_of_a_deep_linear_network():
    torch.manual_seed(0)
    net = models.DeepLinear(5, 6, 3, 4)
    x = torch.randn(30, 5)
    y = torch.arange(4).repeat(8)[:30]
    feats, labels = collapse.layer_inputs(net, (x, y))
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(feats) == len(linears) + 1  # every Linear's input and the output
    h = x
    with torch.no_grad():
        for name, layer in zip(list(feats)[:-1], linears):
            assert torch.allclose(feats[name], h)
            h = layer(h)
        assert torch.allclose(feats["output"], h)
    table = collapse.layerwise_metrics({k: v.double() for k, v in feats.items()}, labels)
    assert list(table["layer"]) == list(feats)
    with pytest.raises(ValueError, match="not called"):
        collapse.extract_features(_Unused(), (x, y), layer="unused")


class _Unused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(5, 3), torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


def test_collapse_metrics_streaming_equals_extract_then_compute():
    train_set, net = _tiny_problem()
    net.train()
    m = collapse.collapse_metrics(net, train_set, batch_size=50)
    assert net.training  # mode restored
    feats, labels = collapse.extract_features(net, train_set)
    with torch.no_grad():
        pred = net(train_set.tensors[0]).argmax(1)
    ref = collapse.nc_metrics(feats, labels, weight=net.head.weight.detach(), predictions=pred)
    for name in (*METRICS, "self_duality", "ncc_mismatch", "equinorm_weights"):
        assert getattr(m, name) == pytest.approx(getattr(ref, name), rel=1e-9), name


def test_callback_records_every_k_epochs_and_snapshots():
    train_set, net = _tiny_problem()
    cb = collapse.CollapseCallback(train_set, every=3, snapshot=20)
    hist = train.fit(net, train_set, epochs=7, lr=0.1, callbacks=[cb], progress=False,
                     device="cpu")
    recorded = hist.dropna(subset=["nc1"])["epoch"].tolist()
    assert recorded == [0, 3, 6]
    assert [s["epoch"] for s in cb.snapshots] == [0, 3, 6]
    assert cb.snapshots[-1]["features"].shape == (20, 16)
    # the last recorded value is the metric of the model as it was at epoch 6: recompute by
    # retraining deterministically for 6 epochs
    torch.manual_seed(0)
    net6 = models.MLP(5, [16], 4)
    train.fit(net6, train_set, epochs=6, lr=0.1, progress=False, device="cpu")
    assert hist.loc[hist.epoch == 6, "nc1"].item() == pytest.approx(
        collapse.collapse_metrics(net6, train_set).nc1, rel=1e-6)


def test_callback_snapshots_survive_a_resumed_run(tmp_path):
    train_set, net = _tiny_problem()
    path = tmp_path / "snapshots.pt"
    cb = collapse.CollapseCallback(train_set, every=2, snapshot=8, snapshot_path=path)
    train.fit(net, train_set, epochs=4, lr=0.1, callbacks=[cb], progress=False, device="cpu",
              checkpoint_dir=tmp_path, checkpoint_every=2)
    again = collapse.CollapseCallback(train_set, every=2, snapshot=8, snapshot_path=path)
    assert [s["epoch"] for s in again.snapshots] == [0, 2, 4]
    train.fit(net, train_set, epochs=6, lr=0.1, callbacks=[again], progress=False, device="cpu",
              checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [s["epoch"] for s in again.snapshots] == [0, 2, 4, 6]
    assert torch.equal(again.snapshots[0]["features"], cb.snapshots[0]["features"])


def test_terminal_phase_summary():
    hist = pd.DataFrame({"epoch": [0, 1, 2, 3, 4], "train_acc": [0.5, 0.9, 1.0, 1.0, 1.0],
                         "nc1": [1.0, None, 0.5, None, 0.05]})
    info = collapse.terminal_phase(hist)
    assert info["zero_error_epoch"] == 2
    assert info["drop"] == pytest.approx(10.0)


# ---------------------------------------------------------------------------------------- UFM
def test_ufm_balanced_ce_converges_to_simplex_etf():
    res = collapse.ufm([8] * 4, 6, loss="ce", weight_decay=5e-3, steps=100, progress=False)
    m = res.metrics()
    assert m.nc1 < 1e-6 and m.etf_error < 1e-3 and m.self_duality < 1e-4
    assert m.equinorm_weights < 1e-3 and m.ncc_mismatch == 0.0
    assert res.history["objective"].is_monotonic_decreasing


def test_ufm_bias_free_mse_matches_closed_form_orthogonal_frame():
    counts = [24, 24, 6, 6]
    res = collapse.ufm(counts, 6, loss="mse", bias=False, weight_decay=5e-3, steps=400,
                       record_every=400, progress=False)
    geo = collapse.mean_geometry(res.features, res.labels)
    assert geo.as_dict()["max_abs_cos"] < 1e-3  # orthogonal frame, not an ETF
    expected = collapse.ufm_mse_closed_form(counts, 5e-3)
    assert np.allclose(geo.norms.numpy(), expected["feature_norm"], rtol=1e-3)
    assert np.allclose(res.weight.norm(dim=1).numpy(), expected["weight_norm"], rtol=1e-3)
    assert expected["feature_norm"].iloc[-1] > expected["feature_norm"].iloc[0]


def test_ufm_minority_collapse_grows_with_ratio():
    # the sweep of notebook 03 (a visible cell there): one CE UFM per ratio, classes 2-3 minority
    rows = []
    for ratio in (1, 4, 16):
        counts = data.class_counts(1.0 / ratio, 16, 4, profile="step", minority_classes=2)
        res = collapse.ufm(counts, 4, loss="ce", weight_decay=0.2, steps=150, record_every=150,
                           progress=False)
        rows.append(collapse.minority_collapse(res.weight, [2, 3]))
    curve = pd.DataFrame(rows)
    assert curve["minority_cos"].iloc[0] == pytest.approx(-1 / 3, abs=1e-3)  # ETF at ratio 1
    assert curve["minority_cos"].is_monotonic_increasing
    assert curve["minority_distance"].is_monotonic_decreasing
    assert curve["minority_distance"].iloc[-1] < 1e-2 and curve["minority_cos"].iloc[-1] > 0.99


def test_ufm_deep_linear_collapses_in_every_layer():
    res = collapse.ufm([16, 16, 4, 4], 6, loss="mse", bias=False, depth=3, steps=300,
                       record_every=300, init_scale=0.5, progress=False)
    table = collapse.layerwise_metrics(res.layer_features(), res.labels)
    assert len(table) == 3
    assert (table["nc1"] < 1e-4).all() and (table["max_abs_cos"] < 1e-2).all()
    assert (table["norm_count_corr"] < 0).all()


def test_ufm_is_deterministic_for_a_seed():
    a = collapse.ufm([5] * 3, 4, steps=20, seed=3, progress=False)
    b = collapse.ufm([5] * 3, 4, steps=20, seed=3, progress=False)
    assert torch.equal(a.features, b.features) and torch.equal(a.weight, b.weight)


def test_ufm_errors():
    with pytest.raises(ValueError, match="loss"):
        collapse.ufm([3, 3], 2, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="class_counts"):
        collapse.ufm([3], 2, progress=False)


# ------------------------------------------------------------------------------------ SupCon
def _supcon_naive(z, y, t):
    z = torch.nn.functional.normalize(z, dim=1)
    losses = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        if not pos:
            continue
        denom = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        losses.append(-torch.stack([z[i] @ z[p] / t - denom for p in pos]).mean())
    return torch.stack(losses).mean()


def test_supcon_matches_naive_loop_and_has_gradients():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(13, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 1, 2, 2, 4])  # class 4: an anchor without positive
    loss = collapse.supcon_loss(z, y, temperature=0.3)
    assert loss.item() == pytest.approx(_supcon_naive(z, y, 0.3).item(), rel=1e-12)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_supcon_prefers_simplex_then_orthogonal_frame_then_random():
    # balanced classes, collapsed embeddings: the simplex ETF minimises SupCon (Graf et al. 2021)
    c = 4
    labels = torch.arange(c).repeat(5)
    etf = collapse.simplex_etf(c, c)
    orth = torch.eye(c, dtype=torch.float64)
    rand = torch.randn(len(labels), c, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))
    values = [collapse.supcon_loss(m, labels, temperature=0.1).item()
              for m in (etf[labels], orth[labels], rand)]
    assert values[0] < values[1] < values[2]


def test_supcon_through_fit_relu_gives_near_orthogonal_frame_under_imbalance():
    train_set, _ = data.gaussian_mixture(n_samples=400, n_classes=4, dim=6, seed=2)
    imb = data.imbalance(train_set, ratio=0.2, seed=0)
    torch.manual_seed(0)
    enc = torch.nn.Sequential(models.MLP(6, [32], 8), torch.nn.ReLU())
    hist = train.fit(enc, imb, loss=collapse.SupConLoss(temperature=0.1), metrics=("loss",),
                     optimizer="adam", lr=1e-2, epochs=150, device="cpu", progress=False)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert "train_acc" not in hist  # embeddings, not logits: no accuracy column
    with torch.no_grad():
        z = enc.eval()(imb.tensors[0])
    geo = collapse.mean_geometry(z, imb.tensors[1], normalize=True).as_dict()
    assert geo["max_abs_cos"] < 0.2


def test_ufm_supcon_balanced_etf_relu_orthogonal_and_imbalance_asymmetric():
    # Kini et al. 2023 (arXiv:2306.07960) in the unconstrained-features form
    balanced, imbalanced = [8] * 4, [16, 16, 2, 2]
    etf = collapse.ufm_supcon(balanced, 8, steps=300, seed=0)
    assert etf.geometry().as_dict()["etf_deviation"] < 1e-3
    assert etf.history["loss"].iloc[-1] < etf.history["loss"].iloc[0]
    asym = collapse.ufm_supcon(imbalanced, 8, steps=300, seed=0).geometry().as_dict()
    assert asym["std_cos"] > 0.1
    for counts in (balanced, imbalanced):
        sol = collapse.ufm_supcon(counts, 8, relu=True, steps=300, restarts=3, seed=0)
        assert (sol.features >= 0).all() and len(sol.losses) == 3
        assert sol.loss == min(sol.losses)
        assert sol.geometry().as_dict()["max_abs_cos"] < 1e-3


def test_ufm_supcon_is_deterministic_and_checks_arguments():
    a = collapse.ufm_supcon([4, 4, 3], 4, steps=20, seed=3)
    b = collapse.ufm_supcon([4, 4, 3], 4, steps=20, seed=3)
    assert torch.equal(a.features, b.features)
    with pytest.raises(ValueError, match="positive pair"):
        collapse.ufm_supcon([4, 1], 4)
    with pytest.raises(ValueError, match="temperature"):
        collapse.ufm_supcon([4, 4], 4, temperature=0.0)
    with pytest.raises(ValueError, match="positive"):
        collapse.ufm_supcon([4, 4], 4, restarts=0)


def test_supcon_errors():
    with pytest.raises(ValueError, match="temperature"):
        collapse.SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="positive"):
        collapse.supcon_loss(torch.randn(3, 2), torch.tensor([0, 1, 2]))


# --------------------------------------------------------------------------------- geometry
def test_mean_geometry_distinguishes_orthogonal_frame_and_etf():
    labels = torch.arange(4).repeat(3)
    orth = collapse.mean_geometry(torch.eye(4, dtype=torch.float64)[labels] * 2, labels)
    assert orth.as_dict()["max_abs_cos"] < 1e-12
    etf = collapse.mean_geometry(collapse.simplex_etf(4, 6)[labels], labels)
    assert etf.as_dict()["etf_deviation"] < 1e-12
    # the orthogonal frame is an ETF once centred
    centred = collapse.mean_geometry(torch.eye(4, dtype=torch.float64)[labels], labels,
                                     center="class_means")
    assert centred.as_dict()["etf_deviation"] < 1e-12


# ----------------------------------------------------------------------- deprecated names
def test_bn_mlp_is_a_deprecated_alias_of_the_batch_norm_mlp():
    with pytest.warns(DeprecationWarning, match=r"models\.MLP"):
        net = collapse.bn_mlp(5, [8, 8], 3)
    assert isinstance(net, models.MLP) and net.norm == "batch"
    x = torch.randn(10, 5)
    assert net(x).shape == (10, 3) and net.features(x).shape == (10, 8)
    assert isinstance(net.head, torch.nn.Linear)


def test_train_supcon_is_a_deprecated_alias_of_fit():
    train_set, _ = data.gaussian_mixture(n_samples=120, n_classes=3, dim=4, seed=1)
    torch.manual_seed(0)
    enc = models.MLP(4, [16], 6)
    with pytest.warns(DeprecationWarning, match=r"train\.fit"):
        hist = collapse.train_supcon(enc, train_set, epochs=20, lr=1e-2, progress=False)
    torch.manual_seed(0)
    again = models.MLP(4, [16], 6)
    ref = train.fit(again, train_set, loss=collapse.supcon_loss, metrics=("loss",),
                    optimizer="adam", lr=1e-2, epochs=20, device="cpu", progress=False)
    assert list(hist["loss"]) == list(ref["train_loss"])  # the same run, old column name
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]


def test_epoch_panel_moved_to_widgets_with_a_deprecated_alias():
    from toolkit.plotting import collapse as nc_plots
    from toolkit.widgets import collapse as nc_widgets

    with pytest.warns(DeprecationWarning, match="toolkit.widgets.collapse.epoch_panel"):
        old = nc_plots.epoch_panel
    assert old is nc_widgets.epoch_panel
    assert "epoch_panel" not in nc_plots.__all__


def test_package_reexports_every_public_name_of_its_modules():
    import importlib

    for name in ("metrics", "accumulator", "features", "ufm", "supcon"):
        module = importlib.import_module(f"toolkit.collapse.{name}")
        for public in module.__all__:
            assert getattr(collapse, public) is getattr(module, public), (name, public)
    assert not hasattr(collapse, "minority_collapse_curve")  # the sweep lives in notebook 03


# --------------------------------------------------------------------------------- plotting
def test_metrics_plot_marks_the_zero_error_epoch():
    import matplotlib

    matplotlib.use("Agg")
    from toolkit.plotting import collapse as nc_plots

    hist = pd.DataFrame({"epoch": [0, 5, 10, 15], "train_acc": [0.3, 0.95, 1.0, 1.0],
                         "nc1": [2.0, 0.5, 0.1, 0.01], "etf_error": [0.8, 0.5, 0.3, 0.2]})
    fig = nc_plots.metrics_vs_epoch(hist)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    vlines = [line for line in ax.lines if list(line.get_xdata()) == [10, 10]]
    assert len(vlines) == 1


def test_panel_and_views_draw_headless():
    import matplotlib

    matplotlib.use("Agg")
    from toolkit.plotting import collapse as nc_plots
    from toolkit.widgets import collapse as nc_widgets

    train_set, net = _tiny_problem()
    cb = collapse.CollapseCallback(train_set, every=2, snapshot=16)
    hist = train.fit(net, train_set, epochs=4, lr=0.1, callbacks=[cb], progress=False,
                     device="cpu")
    panel = nc_widgets.epoch_panel(cb.snapshots, hist)
    assert panel.n_draws == 1 and len(panel.figure.axes) == 2
    panel.controls["epoch"].value = 2
    assert panel.n_draws == 2
    feats, labels = collapse.extract_features(net, train_set)
    fig = nc_plots.class_means_view(feats, labels, dims=3, weight=net.head.weight)
    assert fig.axes[0].name == "3d"
    fig = nc_plots.gram_heatmap(feats, labels, weight=net.head.weight)
    assert len(fig.axes) == 4  # three panels and a colour bar


# ------------------------------------------------------------------ batch-binding (issue 15)


def test_batch_binding_sampler_appends_the_same_one_per_class_set_to_every_batch():
    from toolkit.collapse import BatchBindingSampler
    labels = torch.tensor([0] * 40 + [1] * 8 + [2] * 2)
    s = BatchBindingSampler(labels, 8, seed=0)
    assert sorted(int(labels[i]) for i in s.binding) == [0, 1, 2]
    for _ in range(3):  # three epochs
        batches = list(s)
        assert len(batches) == len(s) == 7
        seen = [i for b in batches for i in b if i not in s.binding]
        assert sorted(seen) == sorted(set(range(50)) - set(s.binding))  # a permutation of the rest
        for b in batches:
            assert set(s.binding) <= set(b) and len(b) == len(set(b))
            assert {int(labels[i]) for i in b} == {0, 1, 2}
    plain = BatchBindingSampler(labels, 8, bind=False, seed=0)
    batches = list(plain)
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert any(len({int(labels[i]) for i in b}) < 3 for b in batches)  # random batches miss classes


class _KwNet(torch.nn.Module):
    """Hugging Face style: forward(input, labels=None) -> {"logits": ...}."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input, labels=None):
        return {"logits": self.net(input)}


def test_features_and_metrics_from_dict_batches_equal_tuple_batches():
    train_set, net = _tiny_problem()
    x, y = train_set.tensors
    kw = _KwNet(net)
    ref_f, ref_y = collapse.extract_features(net, train_set)
    ref = collapse.collapse_metrics(net, train_set, batch_size=50)
    cols = {"input": x, "labels": y}
    ready = [{"input": x[i:i + 40], "labels": y[i:i + 40]} for i in range(0, len(x), 40)]
    for batches in (cols, ready):
        feats, labels = collapse.extract_features(kw, batches, layer="net.head")
        assert torch.allclose(feats, ref_f) and torch.equal(labels, ref_y)
        m = collapse.collapse_metrics(kw, batches, layer="net.head", batch_size=50)
        for name in (*METRICS, "self_duality", "ncc_mismatch"):
            assert getattr(m, name) == pytest.approx(getattr(ref, name), rel=1e-9), name
    layers, labels = collapse.layer_inputs(kw, cols, layers=["net.head"])
    assert torch.allclose(layers["net.head"], ref_f) and torch.equal(labels, y)
    cb = collapse.CollapseCallback(cols, layer="net.head", snapshot=10)
    row = cb(0, kw)
    assert row["nc1"] == pytest.approx(ref.nc1, rel=1e-9) and len(cb.snapshots) == 1
    with pytest.raises(ValueError, match="'labels'"):
        collapse.extract_features(kw, {"input": x}, layer="net.head")
    with pytest.raises(ValueError, match="data is empty"):
        collapse.extract_features(net, torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x[:0], y[:0]), batch_size=4))


def test_a_corrupted_snapshot_file_is_reported_and_kept(tmp_path):
    path = tmp_path / "snaps.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"snaps.pt cannot be read.*delete it or pass a new "
                                         "snapshot_path"):
        collapse.CollapseCallback((torch.zeros(4, 2), torch.arange(4) % 2), snapshot_path=path)
    assert path.read_bytes() == b"garbage"
