"""The batch contract (toolkit.batches): data → batches, model calls and losses."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from toolkit import batches


class DictNet(nn.Module):
    """A Hugging Face-style model: forward(input, labels=None) -> dict with logits (and loss)."""

    def __init__(self, d=3, k=4):
        super().__init__()
        self.lin = nn.Linear(d, k)

    def forward(self, input, labels=None):
        out = {"logits": self.lin(input)}
        if labels is not None:
            out["loss"] = F.cross_entropy(out["logits"], labels)
        return out


class DictSet(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input": self.x[i], "labels": self.y[i]}


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 3, generator=g), torch.randint(0, 4, (10,), generator=g)


def _cat(bs, key):
    return torch.cat([b[key] for b in bs])


def test_every_data_form_yields_the_same_samples_in_order(xy):
    x, y = xy
    forms = {
        "pair": (x, y), "list_pair": [x, y], "tensor_dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=4),
        "ready": [(x[:4], y[:4]), (x[4:], y[4:])],
    }
    for name, data in forms.items():
        out = list(batches.iterate(data, batch_size=4))
        assert all(isinstance(b, tuple) for b in out), name
        assert torch.equal(_cat(out, 0), x) and torch.equal(_cat(out, 1), y), name
    dict_forms = {
        "columns": {"input": x, "labels": y},
        "dataset": DictSet(x, y),
        "loader": DataLoader(DictSet(x, y), batch_size=3),
        "ready": [{"input": x[:5], "labels": y[:5]}, {"input": x[5:], "labels": y[5:]}],
    }
    for name, data in dict_forms.items():
        out = list(batches.iterate(data, batch_size=4))
        assert all(isinstance(b, dict) for b in out), name
        assert torch.equal(_cat(out, "input"), x) and torch.equal(_cat(out, "labels"), y), name


def test_batch_size_splits_tensors_and_columns(xy):
    x, y = xy
    assert [batches.batch_len(b) for b in batches.iterate((x, y), 4)] == [4, 4, 2]
    assert [batches.batch_len(b) for b in batches.iterate({"a": x, "labels": y}, 3)] == [3, 3, 3, 1]
    assert [batches.batch_len(b) for b in batches.iterate((x, y))] == [10]


def test_to_device_is_recursive_and_keeps_types(xy):
    x, y = xy
    batch = {"a": x, "nested": (y, [x]), "name": "s"}
    moved = batches.to_device(batch, torch.device("meta"))
    assert moved["a"].device.type == "meta" and moved["nested"][0].device.type == "meta"
    assert isinstance(moved["nested"], tuple) and isinstance(moved["nested"][1], list)
    assert moved["nested"][1][0].device.type == "meta" and moved["name"] == "s"
    assert batches.to_device(batch, None) is batch


def test_bad_data_and_batch_size_are_refused(xy):
    x, y = xy
    with pytest.raises(ValueError, match="different lengths"):
        list(batches.iterate((x, y[:3])))
    with pytest.raises(ValueError, match="sharing their first"):
        list(batches.iterate({"a": x, "b": y[:3]}))
    with pytest.raises(TypeError, match="list of ready batches"):
        list(batches.iterate(42))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches.iterate((x, y), batch_size=0))
    with pytest.raises(TypeError, match="holds no tensor"):
        batches.batch_len({"s": "text"})


def test_model_output_tuple_dict_and_functional_call(xy):
    x, y = xy
    torch.manual_seed(0)
    net = DictNet()
    plain = nn.Linear(3, 4)
    assert torch.equal(batches.model_output(plain, (x, y)), plain(x))
    out = batches.model_output(net, {"input": x, "labels": y})
    assert torch.equal(out["logits"], net.lin(x)) and "loss" in out
    # functional_call with other parameters equals a model holding them
    params = {k: torch.randn_like(v) for k, v in plain.named_parameters()}
    other = nn.Linear(3, 4)
    other.load_state_dict(params)
    assert torch.allclose(batches.model_output(plain, (x, y), params=params), other(x))
    dparams = {k: v * 2 for k, v in net.named_parameters()}
    got = batches.model_output(net, {"input": x}, params=dparams)["logits"]
    assert torch.allclose(got, x @ dparams["lin.weight"].T + dparams["lin.bias"])


def test_model_refusing_the_dict_keys_names_the_contract(xy):
    x, y = xy
    with pytest.raises(TypeError, match=r"model\(\*\*batch\).*'input'"):
        batches.model_output(nn.Linear(3, 4), {"input": x, "labels": y})


def test_targets_and_logits(xy):
    x, y = xy
    assert batches.targets((x, y)) is y and batches.targets((x,)) is None
    assert batches.targets({"input": x, "labels": y}) is y
    assert batches.targets({"input": x}) is None
    assert batches.logits(x) is x and batches.logits({"logits": y}) is y
    assert batches.logits((x, y)) is x


def test_batch_loss_follows_the_contract(xy):
    x, y = xy
    torch.manual_seed(0)
    net = DictNet()
    logits = net.lin(x)
    ce = F.cross_entropy(logits, y)
    # (outputs, targets) for tuple batches
    assert torch.equal(batches.batch_loss(F.cross_entropy, logits, (x, y)), ce)
    # a marked loss gets the whole batch, tuple or dict
    seen = []

    @batches.takes_batch
    def whole(outputs, batch):
        seen.append(type(batch))
        return F.cross_entropy(batches.logits(outputs), batches.targets(batch))

    assert torch.equal(batches.batch_loss(whole, logits, (x, y)), ce)
    out = net(input=x, labels=y)
    assert torch.equal(batches.batch_loss(whole, out, {"input": x, "labels": y}), ce)
    assert seen == [tuple, dict]
    # an unmarked loss on a dict batch gets the batch too
    assert torch.equal(batches.batch_loss(lambda o, b: F.cross_entropy(o["logits"], b["labels"]),
                                          out, {"input": x, "labels": y}), ce)
    # a targets-marked loss gets the labels (and the logits) from a dict
    t_ce = batches.takes_targets(lambda o, t: F.cross_entropy(o, t))
    assert torch.equal(batches.batch_loss(t_ce, out, {"input": x, "labels": y}), ce)
    # no loss: the model's own .loss / ["loss"]
    assert torch.equal(batches.batch_loss(None, out, {"input": x, "labels": y}), out["loss"])


def test_builtin_losses_can_be_marked(xy):
    x, y = xy
    marked = batches.takes_targets(F.cross_entropy)
    assert marked.takes_targets
    assert torch.equal(batches.batch_loss(marked, {"logits": x[:, :3]}, {"labels": y % 3}),
                       F.cross_entropy(x[:, :3], y % 3))


def test_batch_loss_errors_name_the_contract(xy):
    x, y = xy
    with pytest.raises(TypeError, match="takes_targets"):
        batches.batch_loss(F.cross_entropy, x, {"input": x, "labels": y})
    with pytest.raises(TypeError, match="no .loss"):
        batches.batch_loss(None, x, (x, y))
    with pytest.raises(TypeError, match="no targets"):
        batches.batch_loss(F.mse_loss, x, (x,))
    with pytest.raises(TypeError, match="'labels'"):
        batches.batch_loss(batches.takes_targets(F.cross_entropy), x, {"input": x})


def test_marking_never_modifies_the_function():
    marked = batches.takes_targets(F.cross_entropy)
    assert marked is not F.cross_entropy and not hasattr(F.cross_entropy, "takes_targets")
    both = batches.takes_batch(marked)
    assert both.takes_batch and not getattr(both, "takes_targets", False)
