import pytest
import torch

from toolkit import data


def test_gaussian_mixture_shapes_and_determinism():
    tr, te = data.gaussian_mixture(400, n_classes=4, dim=3, seed=1)
    tr2, _ = data.gaussian_mixture(400, n_classes=4, dim=3, seed=1)
    tr3, _ = data.gaussian_mixture(400, n_classes=4, dim=3, seed=2)
    assert len(tr) + len(te) == 400 and tr.tensors[0].shape[1] == 3
    assert tr.tensors[0].dtype == torch.float32 and tr.tensors[1].dtype == torch.int64
    assert torch.equal(tr.tensors[0], tr2.tensors[0])
    assert not torch.equal(tr.tensors[0], tr3.tensors[0])
    assert data.n_classes(tr) == 4


def test_gaussian_mixture_separation_controls_difficulty():
    """A nearest-class-mean rule is near perfect for well separated classes, poor for overlapping."""
    def ncm_acc(sep):
        (x, y), _ = (t.tensors for t in data.gaussian_mixture(2000, 4, 5, separation=sep, seed=0))
        means = torch.stack([x[y == c].mean(0) for c in range(4)])
        return (torch.cdist(x, means).argmin(1) == y).float().mean()
    assert ncm_acc(10.0) > 0.99 and ncm_acc(0.3) < 0.6


def test_digits_standardised_and_split():
    tr, te = data.load_digits(seed=0)
    assert len(tr) + len(te) == 1797
    x = tr.tensors[0]
    assert x.shape[1] == 64
    nonconstant = x.std(0) > 0
    assert torch.allclose(x.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False)[nonconstant], torch.ones(int(nonconstant.sum())),
                          atol=1e-4)
    assert torch.bincount(tr.tensors[1]).min() > 100  # stratified


def test_mnist1d_procedural():
    tr, te = data.load_mnist1d(n_samples=500, seed=3)
    tr2, _ = data.load_mnist1d(n_samples=500, seed=3)
    assert tr.tensors[0].shape == (400, 40) and len(te) == 100
    assert torch.equal(tr.tensors[0], tr2.tensors[0])
    assert data.n_classes(tr) == 10


def test_regression_sets():
    tr, te = data.regression_1d(n_train=15, n_test=50, fn="sin", seed=0)
    assert tr.tensors[0].shape == (15, 1) and te.tensors[1].shape == (50, 1)
    assert torch.allclose(te.tensors[1], torch.sin(te.tensors[0]))
    tr, te = data.teacher_regression(100, dim=5, seed=0)
    assert tr.tensors[1].dtype == torch.float32 and tr.tensors[1].shape[1] == 1


@pytest.mark.parametrize("profile", ["step", "longtail"])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.1])
def test_imbalance_exact_counts(profile, ratio):
    tr, _ = data.gaussian_mixture(1000, n_classes=5, dim=2, seed=0, test_fraction=0.0)
    out = data.imbalance(tr, ratio=ratio, profile=profile, seed=0)
    counts = torch.bincount(out.tensors[1], minlength=5).tolist()
    n_max = 200
    expected = data.class_counts(ratio, n_max, 5, profile=profile)
    assert counts == expected
    assert expected[0] == n_max and expected[-1] == max(1, round(ratio * n_max))
    if profile == "longtail":
        assert all(a >= b for a, b in zip(expected, expected[1:]))


def test_label_noise_exact_fraction():
    tr, _ = data.gaussian_mixture(1000, n_classes=4, dim=2, seed=0, test_fraction=0.0)
    noisy = data.label_noise(tr, 0.3, seed=0)
    changed = (noisy.tensors[1] != tr.tensors[1]).sum().item()
    assert changed == 300  # every flipped label lands on another class
    assert torch.equal(data.label_noise(tr, 0.0).tensors[1], tr.tensors[1])


def test_subsample_stratified():
    tr, _ = data.load_digits()
    sub = data.subsample(tr, 200, seed=0)
    assert len(sub) == 200
    counts = torch.bincount(sub.tensors[1])
    assert counts.max() - counts.min() <= 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(ratio=0.0), r"\(0, 1\]"), (dict(ratio=1.5), r"\(0, 1\]"),
    (dict(ratio=0.5, profile="zipf"), "profile"),
])
def test_imbalance_errors(kwargs, match):
    tr, _ = data.gaussian_mixture(100, seed=0)
    with pytest.raises(ValueError, match=match):
        data.imbalance(tr, **kwargs)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_label_noise_errors(fraction):
    tr, _ = data.gaussian_mixture(100, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        data.label_noise(tr, fraction)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="digits"):
        data.load("imagenet")


def test_load_vision_missing_files_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_vision("cifar10", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "download=True" in str(err.value)
    with pytest.raises(ValueError, match="cifar10"):
        data.load_vision("svhn", root=tmp_path)
