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


# ------------------------------------------------- the batch contract in fit (issue 17 §2)


class _KwNet(torch.nn.Module):
    """A Hugging Face-style wrapper: forward(input, labels=None) -> {"logits", "loss"?}."""

    def __init__(self, seed=0):
        super().__init__()
        self.net = _model(seed)

    def forward(self, input, labels=None):
        out = {"logits": self.net(input)}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(out["logits"], labels)
        return out


def _dict_set(tr):
    from torch.utils.data import Dataset

    x, y = tr.tensors

    class DictSet(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"input": x[i], "labels": y[i]}
    return DictSet()


def test_dict_columns_train_exactly_like_tuples(blobs):
    tr, te = blobs
    x, y = tr.tensors
    kw = dict(epochs=3, batch_size=32, lr=0.1, momentum=0.9, seed=2, progress=False)
    plain, wrapped, own, from_set = _model(), _KwNet(), _KwNet(), _KwNet()
    h_plain = train.fit(plain, tr, test=te, **kw)
    h_dict = train.fit(wrapped, {"input": x, "labels": y}, test={"input": te.tensors[0],
                                                                   "labels": te.tensors[1]}, **kw)
    train.fit(own, {"input": x, "labels": y}, loss=None, metrics=("loss",), **kw)
    train.fit(from_set, _dict_set(tr), **kw)  # a Dataset of dicts is stacked into columns
    for p, q, r, s in zip(plain.parameters(), wrapped.net.parameters(), own.net.parameters(),
                          from_set.net.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r) and torch.equal(p, s)
    assert h_dict["train_loss"].tolist() == h_plain["train_loss"].tolist()
    assert h_dict["test_acc"].tolist() == h_plain["test_acc"].tolist()


def test_ready_dict_batches_with_a_batch_loss_match_a_manual_loop(blobs):
    from toolkit import batches

    tr, _ = blobs
    x, y = tr.tensors
    ready = [{"input": x[i:i + 50], "labels": y[i:i + 50]} for i in range(0, len(x), 50)]
    seen = []

    @batches.takes_batch
    def weighted(outputs, batch):  # a custom objective that reads the batch
        seen.append(sorted(batch))
        return 2.0 * torch.nn.functional.cross_entropy(outputs["logits"], batch["labels"])

    model, manual = _KwNet(), _KwNet()
    h = train.fit(model, ready, loss=weighted, epochs=2, lr=0.05, progress=False)
    opt = torch.optim.SGD(manual.parameters(), lr=0.05)
    for _ in range(2):
        for b in ready:
            opt.zero_grad()
            (2.0 * torch.nn.functional.cross_entropy(manual.net(b["input"]), b["labels"])
             ).backward()
            opt.step()
    for a, b in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert seen[0] == ["input", "labels"] and "train_acc" in h.columns
    with pytest.raises(ValueError, match="batch_size=None"):
        train.fit(_KwNet(), ready, loss=weighted, epochs=1, batch_size=8, progress=False)


def test_resume_with_a_shuffled_dict_loader_is_bit_identical(tmp_path, blobs):
    from torch.utils.data import DataLoader

    tr, _ = blobs
    loader = lambda: DataLoader(_dict_set(tr), batch_size=40, shuffle=True,  # noqa: E731
                                generator=torch.Generator().manual_seed(7))
    kwargs = dict(epochs=5, lr=0.05, momentum=0.9, seed=1, progress=False, checkpoint_every=1)
    reference = _KwNet()
    h_ref = train.fit(reference, loader(), **kwargs)

    def killer(epoch, model, history):
        if epoch == 3:
            raise _Kill
    with pytest.raises(_Kill):
        train.fit(_KwNet(), loader(), checkpoint_dir=tmp_path, callbacks=[killer], **kwargs)
    resumed = _KwNet()
    h = train.fit(resumed, loader(), checkpoint_dir=tmp_path, **kwargs)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert h["train_loss"].tolist() == h_ref["train_loss"].tolist()


# ----------------------------------------------------- clear errors, nothing lost (issue 17 §4)


def test_non_finite_data_is_refused_before_training(blobs):
    from torch.utils.data import DataLoader

    x, y = blobs[0].tensors
    bad = x.clone()
    bad[5, 1] = float("nan")
    bad[9, 0] = float("inf")
    with pytest.raises(ValueError, match=r"train x has 2 non-finite.*first: \[5, 9\].*Drop"):
        train.fit(_model(), (bad, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="test x has 2 non-finite"):
        train.fit(_model(), (x, y), test=(bad, y), epochs=1, progress=False)
    yf = torch.randn(len(x), 3)
    yf[0, 0] = float("nan")
    with pytest.raises(ValueError, match="train y has 1 non-finite"):
        train.fit(_model(), (x, yf), loss="mse", epochs=1, progress=False)
    loader = DataLoader([{"input": bad[i], "labels": y[i]} for i in range(len(x))], batch_size=4)
    with pytest.raises(ValueError, match="train batch 1 input has 1 non-finite"):
        train.fit(_KwNet(), loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match="data batch 0 x has 2 non-finite"):
        train.evaluate(_model(), (bad, y))


def test_class_labels_are_checked_against_the_loss_and_the_output_width(blobs):
    x, y = blobs[0].tensors
    with pytest.raises(TypeError, match=r"float32 but loss='ce' needs integer.*y.long\(\)"):
        train.fit(_model(), (x, y.float()), epochs=1, progress=False)
    for loss in ("ce", "label_smoothing", "maxsup", "mse"):
        with pytest.raises(ValueError, match=r"out of range.*\[0, 2\).*max 2.*K = 3"):
            train.fit(_model(out=2), (x, y), loss=loss, epochs=1, progress=False)
    with pytest.raises(ValueError, match="min -1"):
        train.fit(_model(), (x, y - 1), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"test labels out of range"):
        train.fit(_model(), (x, y), test=(x, y + 3), epochs=1, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        train.evaluate(_model(out=2), (x, y))
    # legitimate cases stay allowed: soft labels shaped like the outputs, ignore_index=-100
    soft = torch.nn.functional.one_hot(y, 3).float()
    train.fit(_model(), (x, soft), epochs=1, progress=False, metrics=("loss",))
    ignored = y.clone()
    ignored[:10] = -100
    train.fit(_model(), (x, ignored), epochs=1, progress=False)


def test_empty_data_and_wrong_dtype_are_named(blobs):
    x, y = blobs[0].tensors
    with pytest.raises(ValueError, match="train is empty"):
        train.fit(_model(), (x[:0], y[:0]), epochs=1, progress=False)
    with pytest.raises(ValueError, match="test is empty"):
        train.fit(_model(), (x, y), test=(x[:0], y[:0]), epochs=1, progress=False)
    with pytest.raises(ValueError, match="empty list of batches"):
        train.fit(_model(), [], epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"train x is torch.float64.*x.to\(torch.float32\)"):
        train.fit(_model(), (x.double(), y), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"data x is torch.float64.*model.to\(torch.float64\)"):
        train.evaluate(_model(), (x.double(), y))
    with pytest.raises(ValueError, match="data is empty"):
        train.evaluate(_model(), [(x[:0], y[:0])])


def _diverging_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g)
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1), (x, y)


def test_a_diverging_run_stops_with_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
    # full-batch GD on a quadratic with lr = 3 > 2/λ_max (λ_max ≈ 2): the error grows ~5× per
    # step and overflows float32 after some tens of epochs
    model, data = _diverging_problem()
    seen = []
    with pytest.raises(train.NonFiniteLossError, match=r"in epoch \d+ of 200.*Lower the learning "
                                                       r"rate.*last good checkpoint") as info:
        train.fit(model, data, loss="mse", lr=3.0, epochs=200, checkpoint_dir=tmp_path,
                  checkpoint_every=1, progress=False,
                  callbacks=[lambda e, m, h: seen.append(e)])
    err = info.value
    assert 5 < err.epoch < 200
    ckpt = train.load_checkpoint(tmp_path / train.CHECKPOINT_NAME)
    assert ckpt["epoch"] == err.epoch - 1 and err.checkpoint == tmp_path / train.CHECKPOINT_NAME
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len(err.history) == err.epoch and err.history["train_loss"].map(math.isfinite).all()
    assert max(seen) == err.epoch - 1  # no callback saw the broken state
    # without a checkpoint the message says so
    model, data = _diverging_problem()
    with pytest.raises(train.NonFiniteLossError, match="epoch"):
        train.fit(model, data, loss="mse", lr=3.0, epochs=200, progress=False)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_checkpoint"])
def test_a_corrupted_checkpoint_is_reported_and_never_overwritten(blobs, tmp_path, damage):
    tr, _ = blobs
    path = tmp_path / train.CHECKPOINT_NAME
    train.fit(_model(), tr, epochs=2, checkpoint_dir=tmp_path, progress=False)
    if damage == "garbage":
        path.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    before = path.read_bytes()
    with pytest.raises(train.CheckpointError) as info:
        train.fit(_model(), tr, epochs=4, checkpoint_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert str(path) in msg and "delete it or pass a new checkpoint path to start over" in msg
    assert path.read_bytes() == before
    # starting over explicitly works
    h = train.fit(_model(), tr, epochs=1, checkpoint_dir=tmp_path / "new", progress=False)
    assert len(h) == 2


def test_tqdm_disable_silences_the_training_bar(blobs, capsys, monkeypatch):
    tr, _ = blobs
    monkeypatch.setenv("TQDM_DISABLE", "1")
    train.fit(_model(), tr, epochs=2, progress=True)
    assert "training" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    train.fit(_model(), tr, epochs=2, progress=True)
    assert "training" in capsys.readouterr().err


class _KwLogits(_KwNet):
    def forward(self, input, labels=None):
        return self.net(input)


def test_stream_labels_and_dict_keys_the_model_refuses_are_named(blobs):
    from torch.utils.data import DataLoader

    x, y = blobs[0].tensors
    loader = DataLoader([{"input": x[i], "labels": y[i] + 1} for i in range(len(x))],
                        batch_size=50)
    with pytest.raises(IndexError, match=r"while evaluating train batch 0.*class indices"):
        train.fit(_KwNet(), loader, epochs=1, progress=False)  # its forward computes the loss
    with pytest.raises(ValueError, match=r"train batch 0 labels out of range.*\[0, 3\)"):
        train.fit(_KwLogits(), loader, epochs=1, progress=False)  # a model returning logits
    with pytest.raises(ValueError, match=r"data batch 0 labels out of range"):
        train.evaluate(_KwLogits(), loader)
    floats = DataLoader([{"input": x[i], "labels": y[i].float()} for i in range(len(x))],
                        batch_size=50)
    with pytest.raises(TypeError, match=r"train batch 0 targets are torch.float32.*y.long"):
        train.fit(_KwNet(), floats, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"model\(\*\*batch\) with the keys \['input', 'labels'\]"):
        train.fit(_model(), {"input": x, "labels": y}, epochs=1, progress=False)


def test_on_nonfinite_stop_returns_the_history_with_an_inf_loss():
    # a learning-rate sweep records divergence as an outcome instead of stopping the sweep
    torch.manual_seed(0)
    x = torch.randn(64, 4) * 10
    y = x.sum(1, keepdim=True)
    model = torch.nn.Linear(4, 1)
    history = train.fit(model, (x, y), loss="mse", lr=10.0, epochs=30, progress=False,
                  metrics=("loss",), on_nonfinite="stop")
    assert history["train_loss"].iloc[-1] == float("inf")
    assert history["train_loss"].iloc[:-1].map(math.isfinite).all()
    with pytest.raises(train.NonFiniteLossError, match="Lower the learning rate"):
        train.fit(torch.nn.Linear(4, 1), (x, y), loss="mse", lr=10.0, epochs=30, progress=False,
            metrics=("loss",))
    with pytest.raises(ValueError, match="on_nonfinite"):
        train.fit(model, (x, y), loss="mse", epochs=1, progress=False, on_nonfinite="ignore")
