import math

import pytest
import torch

from toolkit import data, models, train


@pytest.fixture(scope="module")
def blobs():
    return data.gaussian_mixture(300, n_classes=3, dim=4, separation=4.0, seed=0)


def _model(seed=0, out=3):
    torch.manual_seed(seed)
    return models.MLP(4, [16], out)


def test_loss_decreases_and_history_has_epoch_zero(blobs):
    tr, te = blobs
    h = train.fit(_model(), tr, test=te, epochs=20, lr=0.5, progress=False)
    assert list(h["epoch"]) == list(range(21))
    assert h["train_loss"].iloc[-1] < 0.5 * h["train_loss"].iloc[0]
    assert h["test_acc"].iloc[-1] > 0.9
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr"} <= set(h.columns)


def test_epoch_zero_is_the_untrained_model(blobs):
    tr, _ = blobs
    m = _model()
    before = train.evaluate(m, tr)
    h = train.fit(_model(), tr, epochs=1, progress=False)
    assert math.isclose(h["train_loss"].iloc[0], before["loss"], rel_tol=1e-6)


def test_same_seed_same_weights(blobs):
    tr, _ = blobs
    m1, m2 = _model(), _model()
    train.fit(m1, tr, epochs=3, batch_size=32, seed=5, progress=False)
    train.fit(m2, tr, epochs=3, batch_size=32, seed=5, progress=False)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


class _Kill(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "sam"])
def test_resume_is_bit_identical(blobs, tmp_path, optimizer):
    tr, te = blobs
    kwargs = dict(test=te, epochs=6, batch_size=32, lr=0.05, momentum=0.9, optimizer=optimizer,
                  seed=1, progress=False, checkpoint_every=2)
    reference = _model()
    h_ref = train.fit(reference, tr, **kwargs)

    def killer(epoch, model, history):
        if epoch == 3:
            raise _Kill
    interrupted = _model()
    with pytest.raises(_Kill):
        train.fit(interrupted, tr, checkpoint_dir=tmp_path, callbacks=[killer], **kwargs)
    resumed = _model()  # a fresh process would rebuild the model from scratch
    h = train.fit(resumed, tr, checkpoint_dir=tmp_path, **kwargs)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert list(h["epoch"]) == list(range(7))
    assert h["train_loss"].tolist() == h_ref["train_loss"].tolist()
    # a finished run just loads: no training, same history
    again = _model(seed=123)
    h2 = train.fit(again, tr, checkpoint_dir=tmp_path, **kwargs)
    assert h2["train_loss"].tolist() == h["train_loss"].tolist()
    for a, b in zip(reference.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_of_other_shape_is_refused(blobs, tmp_path):
    tr, _ = blobs
    train.fit(_model(), tr, epochs=2, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different shape"):
        train.fit(models.MLP(4, [32], 3), tr, epochs=4, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train.fit(_model(), tr, epochs=4, lr=0.3, checkpoint_dir=tmp_path, progress=False)


def test_checkpoint_is_written_atomically_and_loads_weights_only(blobs, tmp_path):
    tr, _ = blobs
    train.fit(_model(), tr, epochs=2, checkpoint_dir=tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["checkpoint.pt"]  # no temporary file left behind
    ckpt = train.load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and "model" in ckpt


def test_callbacks_record_columns(blobs):
    tr, _ = blobs
    seen_modes = []

    def norm(epoch, model, history):
        seen_modes.append(model.training)
        return {"w_norm": sum(p.norm() ** 2 for p in model.parameters()).sqrt()}
    h = train.fit(_model(), tr, epochs=4, callbacks=[norm], callback_every=2, progress=False)
    assert h["w_norm"].notna().tolist() == [True, False, True, False, True]
    assert not any(seen_modes)


def test_mse_on_labels_uses_one_hot(blobs):
    out = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert train.get_loss("mse")(out, torch.tensor([0, 2])).item() == 0.0
    h = train.fit(_model(), blobs[0], loss="mse", epochs=10, lr=0.05, progress=False)
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]


def test_maxsup_penalises_top1_not_ground_truth():
    logits = torch.tensor([[5.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1]))
    # wrong but confident: MaxSup still penalises the top logit (5 - 5/3), label smoothing's
    # ground-truth term would reward it
    got = train.get_loss("maxsup", alpha=0.3)(logits, torch.tensor([1]))
    assert torch.isclose(got, ce + 0.3 * (5.0 - 5.0 / 3))


def test_label_smoothing_matches_definition():
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    s = 0.2
    target = (1 - s) * torch.nn.functional.one_hot(y, 4) + s / 4
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    assert torch.isclose(train.get_loss("label_smoothing", smoothing=s)(logits, y), expected)


def test_sam_step_on_quadratic_matches_closed_form():
    """L(w) = ½ wᵀAw: SAM's step is w − lr·A(w + ρ·Aw/‖Aw‖)."""
    A = torch.diag(torch.tensor([3.0, 1.0]))
    w0 = torch.tensor([1.0, -2.0])
    w = torch.nn.Parameter(w0.clone())
    opt = train.SAM([w], torch.optim.SGD, rho=0.1, lr=0.5)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ A @ w
        loss.backward()
        return loss
    opt.step(closure)
    g = A @ w0
    expected = w0 - 0.5 * A @ (w0 + 0.1 * g / g.norm())
    assert torch.allclose(w.detach(), expected, atol=1e-6)


def test_step_schedule():
    assert [train.lr_factor("step", e, 8) for e in (0, 3, 4, 5, 6, 7)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss="hinge"), "loss='hinge' is unknown"),
    (dict(optimizer="lbfgs"), "optimizer='lbfgs' is unknown"),
    (dict(schedule="warmup"), "schedule"),
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=-1), "epochs"),
    (dict(device="tpu"), "device"),
])
def test_bad_arguments(blobs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.fit(_model(), blobs[0], progress=False, **kwargs)


def test_presets_unknown_names_list_valid_ones():
    from toolkit import presets
    assert presets.get_preset("tour", "toy").dataset == "digits"
    with pytest.raises(ValueError, match="toy"):
        presets.get_preset("tour", "huge")
    with pytest.raises(ValueError, match="tour"):
        presets.get_preset("nope", "toy")


def test_get_device():
    import toolkit
    assert toolkit.get_device("cpu").type == "cpu"
    assert toolkit.get_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            toolkit.get_device("cuda")


# ------------------------------------------------------------ a callable loss on embeddings
def test_fit_with_a_supcon_callable_loss_on_embeddings(blobs):
    """A contrastive loss through fit: the loss falls on separable blobs and the history holds no
    accuracy (the argmax of an embedding is no prediction)."""
    from toolkit import collapse

    tr, te = blobs
    torch.manual_seed(0)
    encoder = models.MLP(4, [16], 8)  # 8-dim embeddings of 3 classes
    h = train.fit(encoder, tr, test=te, loss=collapse.supcon_loss,
                  loss_kwargs={"temperature": 0.2}, metrics=("loss",), optimizer="adam",
                  lr=1e-2, epochs=40, progress=False, device="cpu")
    # SupCon >= mean_i log|P(i)| (Jensen: the positives' probabilities sum to at most 1); the
    # gap to that bound, reached by collapsed well-separated classes, must mostly close
    sizes = torch.bincount(tr.tensors[1]).double()
    bound = float((sizes * torch.log(sizes - 1)).sum() / sizes.sum())
    gaps = h["train_loss"] - bound
    assert (gaps > 0).all() and gaps.iloc[-1] < 0.3 * gaps.iloc[0]
    assert h["test_loss"].iloc[-1] < h["test_loss"].iloc[0]
    assert not {"train_acc", "test_acc"} & set(h.columns)
    # the epoch-0 row is the loss of the untrained encoder on the whole set, in eval mode
    torch.manual_seed(0)
    fresh = models.MLP(4, [16], 8)
    x, y = tr.tensors
    with torch.no_grad():
        expected = float(collapse.supcon_loss(fresh.eval()(x), y, temperature=0.2))
    assert math.isclose(h["train_loss"].iloc[0], expected, rel_tol=1e-6)


def test_evaluate_metrics_option(blobs):
    tr, _ = blobs
    m = _model()
    both = train.evaluate(m, tr)
    only_loss = train.evaluate(m, tr, metrics=("loss",))
    assert set(both) == {"loss", "acc"} and set(only_loss) == {"loss"}
    assert only_loss["loss"] == both["loss"]
    for bad in ("loss", (), ("acc",), ("loss", "f1")):
        with pytest.raises(ValueError, match="metrics"):
            train.fit(_model(), tr, epochs=1, metrics=bad, progress=False)


# ------------------------------------------------------------------- batch samplers (issue 15)


def test_batch_sampler_drives_the_steps_and_matches_manual_sgd(blobs):
    from toolkit.collapse import BatchBindingSampler
    tr, _ = blobs
    x, y = tr.tensors
    sampler = BatchBindingSampler(y, 64, seed=3)
    batches = [list(b) for b in BatchBindingSampler(y, 64, seed=3)]  # epoch 1 of a twin sampler
    model, manual = _model(), _model()
    train.fit(model, tr, epochs=1, lr=0.1, batch_sampler=sampler, progress=False)
    opt = torch.optim.SGD(manual.parameters(), lr=0.1)
    for b in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(manual(x[b]), y[b]).backward()
        opt.step()
    for a, b in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_with_batch_sampler_is_bit_identical(blobs, tmp_path):
    from toolkit.collapse import BatchBindingSampler
    tr, _ = blobs
    kwargs = dict(epochs=6, lr=0.05, momentum=0.9, seed=1, progress=False, checkpoint_every=2)
    reference = _model()
    h_ref = train.fit(reference, tr, batch_sampler=BatchBindingSampler(tr.tensors[1], 32, seed=4),
                      **kwargs)

    def killer(epoch, model, history):
        if epoch == 3:
            raise _Kill
    with pytest.raises(_Kill):
        train.fit(_model(), tr, checkpoint_dir=tmp_path, callbacks=[killer],
                  batch_sampler=BatchBindingSampler(tr.tensors[1], 32, seed=4), **kwargs)
    resumed = _model()
    h = train.fit(resumed, tr, checkpoint_dir=tmp_path,
                  batch_sampler=BatchBindingSampler(tr.tensors[1], 32, seed=4), **kwargs)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert h["train_loss"].tolist() == h_ref["train_loss"].tolist()
    with pytest.raises(ValueError, match="other settings"):  # another sampler config is refused
        train.fit(_model(), tr, checkpoint_dir=tmp_path,
                  batch_sampler=BatchBindingSampler(tr.tensors[1], 16, seed=4), **kwargs)


def test_batch_sampler_argument_checks(blobs):
    from toolkit.collapse import BatchBindingSampler
    tr, _ = blobs
    with pytest.raises(ValueError, match="either batch_size or batch_sampler"):
        train.fit(_model(), tr, epochs=1, batch_size=8,
                  batch_sampler=BatchBindingSampler(tr.tensors[1], 8), progress=False)
    with pytest.raises(TypeError, match="index lists"):
        train.fit(_model(), tr, epochs=1, batch_sampler=3, progress=False)
