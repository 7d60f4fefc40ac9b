"""Models used across the notebooks.

Every classifier here has two parts, ``model.features`` (input → penultimate features) and
``model.head`` (the last ``nn.Linear``), and ``forward(x) = head(features(x))``. Analysis modules
rely on that split (neural collapse reads the features; pruning and spectra read the Linear layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice

__all__ = ["Erf", "ACTIVATIONS", "make_activation", "NTKLinear", "MLP", "MLP_NORMS", "ToImage",
           "SmallCNN", "BasicBlock", "ResNet18", "ResidualBlock", "ResNetMini", "DeepLinear",
           "penultimate", "count_parameters", "MODELS", "build"]


class Erf(nn.Module):
    """The error function as an activation (it has a closed-form infinite-width kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "erf": Erf,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
    "linear": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """Activation module from its name; unknown names list the valid ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


class NTKLinear(nn.Linear):
    r"""Dense layer in the NTK parameterisation (Jacot et al. 2018, arXiv 1806.07572).

    .. math:: z = \frac{\sigma_w}{\sqrt{n_{in}}} W x + \sigma_b b, \qquad W_{ij}, b_i \sim N(0, 1)

    as neural-tangents' ``stax.Dense(W_std=sigma_w, b_std=sigma_b, parameterization="ntk")``.
    The scales live in ``weight_scale`` and ``bias_scale``; the trainable tensors are the unit
    Gaussians, so gradient descent on them is the NTK-parameterised dynamics. A subclass of
    ``nn.Linear``, so pruning, spectra and feature hooks treat it like any Linear layer (they see the
    raw ``weight``; the effective weight is ``weight_scale * weight``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 sigma_w: float = 2**0.5, sigma_b: float = 0.0):
        self.weight_scale = sigma_w / math.sqrt(in_features)
        self.bias_scale = sigma_b
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.normal_(self.bias)

    def effective_weight(self) -> torch.Tensor:
        """The matrix the layer applies, ``weight_scale * weight`` (differentiable)."""
        return self.weight_scale * self.weight

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the layer adds, ``bias_scale * bias`` (``None`` without a bias)."""
        return None if self.bias is None else self.bias_scale * self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.effective_bias())

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", weight_scale={self.weight_scale:.4g}, bias_scale={self.bias_scale:.4g}")


def _standard_linear(n_in: int, n_out: int, bias: bool, sigma_w: float,
                     sigma_b: float) -> nn.Linear:
    """Standard parameterisation with the same initial distribution as NTKLinear:
    W ~ N(0, σ_w²/n_in), b ~ N(0, σ_b²). Only the training dynamics differ."""
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0.0, sigma_w / math.sqrt(n_in))
        if bias:
            layer.bias.normal_(0.0, 1.0).mul_(sigma_b)
    return layer


MLP_NORMS = (None, "batch")


class MLP(nn.Module):
    """Fully connected network ``in_dim → widths... → out_dim``; inputs are flattened.

    ``parameterization="ntk"`` uses :class:`NTKLinear` for every layer (including the readout, as
    neural-tangents' stax does); ``"standard"`` uses ``nn.Linear`` initialised with
    W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²), the same function distribution at initialisation.

    ``norm="batch"`` puts a ``BatchNorm1d`` after every hidden Linear (Linear → BN → activation):
    batch norm before the last layer plus weight decay makes neural collapse appear much sooner
    (Pan & Cao 2023, arXiv 2309.04644). Its output then depends on the batch while training, so
    call ``model.eval()`` before per-input analyses (kernels, Hessians). ``norm=None`` (default)
    has no normalisation.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "relu",
                 parameterization: str = "standard", sigma_w: float = 2**0.5,
                 sigma_b: float = 0.0, bias: bool = True, norm: str | None = None):
        super().__init__()
        widths = list(widths) if not isinstance(widths, int) else [widths]
        if not widths:
            raise ValueError("widths is empty: give at least one hidden width, e.g. widths=[128].")
        if any(int(w) < 1 for w in widths) or in_dim < 1 or out_dim < 1:
            raise ValueError(f"in_dim, widths and out_dim must be positive, got {in_dim}, "
                             f"{widths}, {out_dim}.")
        if parameterization not in ("standard", "ntk"):
            raise ValueError(f"parameterization={parameterization!r} is unknown; choose "
                             "'standard' or 'ntk'.")
        check_choice(norm, "norm", MLP_NORMS)
        make_act = lambda: make_activation(activation)  # noqa: E731 (validate the name up front)
        make_act()

        def linear(n_in, n_out):
            if parameterization == "ntk":
                return NTKLinear(n_in, n_out, bias=bias, sigma_w=sigma_w, sigma_b=sigma_b)
            return _standard_linear(n_in, n_out, bias, sigma_w, sigma_b)

        layers: list[nn.Module] = [nn.Flatten()]
        dims = [in_dim, *widths]
        for n_in, n_out in zip(dims[:-1], dims[1:]):
            layers.append(linear(n_in, n_out))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(make_act())
        self.features = nn.Sequential(*layers)
        self.head = linear(dims[-1], out_dim)
        self.in_dim, self.widths, self.out_dim = in_dim, widths, out_dim
        self.activation, self.parameterization, self.norm = activation, parameterization, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ToImage(nn.Module):
    """Reshape flattened images (N, C·H·W) to (N, C, H, W); leave 4-D input alone."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.channels, self.size = channels, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(len(x), self.channels, self.size, self.size) if x.ndim == 2 else x


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; accepts flattened square images (e.g. digits' 64 pixels)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 16,
                 image_size: int = 8):
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        self.features = nn.Sequential(
            ToImage(in_channels, image_size),
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _norm2d(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r} is unknown; choose 'batch' or 'none'.")


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, arXiv 1512.03385); ``skip=False`` drops the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, skip: bool, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm2d(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _norm2d(norm, c_out)
        self.skip = skip
        self.shortcut = nn.Identity()
        if skip and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          _norm2d(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3×3 stem, four stages of two basic blocks, global average pooling.

    ``skip=False`` gives the same network without shortcuts (Li et al. 2018's comparison);
    ``width`` is the first stage's channel count (64 in the paper).
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 3, width: int = 64,
                 skip: bool = True, norm: str = "batch"):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                   _norm2d(norm, width), nn.ReLU()]
        c_in = width
        for i, c in enumerate(chans):
            for j in range(2):
                layers.append(BasicBlock(c_in, c, 2 if (i > 0 and j == 0) else 1, skip, norm))
                c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    """x ↦ x + W₂ relu(W₁ x) (or, with ``skip=False``, x ↦ relu(W₂ relu(W₁ x)))."""

    def __init__(self, width: int, skip: bool):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(F.relu(self.fc1(x)))
        return F.relu(x + out) if self.skip else F.relu(out)


class ResNetMini(nn.Module):
    """A deep residual MLP for toy landscape demos (Li et al. 2018's skip-connection contrast).

    ``in_dim → width``, then ``depth`` residual blocks (two Linear layers each), then the head.
    With ``skip=False`` the same layers are stacked without shortcuts, which makes deep nets'
    loss surfaces chaotic.
    """

    def __init__(self, in_dim: int = 64, width: int = 32, depth: int = 6, n_classes: int = 10,
                 skip: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.ReLU(),
                                      *[ResidualBlock(width, skip) for _ in range(depth)])
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DeepLinear(nn.Module):
    """A deep linear network ``in_dim → width (× depth layers) → out_dim`` with no activations.

    Weights start at N(0, 1/fan_in), which keeps the signal's scale through depth.
    """

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, bias: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        dims = [in_dim] + [width] * depth
        layers: list[nn.Module] = [nn.Flatten()]
        layers += [_standard_linear(a, b, bias, 1.0, 0.0) for a, b in zip(dims[:-1], dims[1:])]
        self.features = nn.Sequential(*layers)
        self.head = _standard_linear(width, out_dim, bias, 1.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features of any model here (``model.features(x)``)."""
    if not hasattr(model, "features"):
        raise TypeError(f"{type(model).__name__} has no `.features`; use "
                        "toolkit.collapse.extract_features(model, data, layer=...) instead.")
    return model.features(x)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


MODELS = {"mlp": MLP, "cnn": SmallCNN, "resnet18": ResNet18, "resnet_mini": ResNetMini,
          "deep_linear": DeepLinear}


def build(name: str, **kwargs) -> nn.Module:
    """Build a model by name (``mlp``, ``cnn``, ``resnet18``, ``resnet_mini``, ``deep_linear``)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name](**kwargs)
