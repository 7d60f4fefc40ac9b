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

__all__ = ["Erf", "ACTIVATIONS", "make_activation", "ScaledLinear", "applied_weights", "NTKLinear",
           "MuPLinear", "MLP", "MLP_NORMS", "MLP_PARAMETERIZATIONS", "ToImage",
           "SmallCNN", "TinyCNN", "BasicBlock", "ResNet18", "ResidualBlock", "ResNetMini", "DeepLinear",
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


class ScaledLinear(nn.Linear):
    r"""A dense layer that applies scalar multiples of its trainable tensors,
    :math:`z = s_w W x + s_b b`, with the scales in ``weight_scale`` and ``bias_scale``.

    The parameterisations that change training dynamics without changing the function class (NTK,
    μP) are such layers; subclasses set the scales and the initialisation. A subclass of
    ``nn.Linear``, so pruning, spectra and feature hooks treat it like any Linear layer (they see the
    raw ``weight``; :meth:`effective_weight` is what the layer applies).
    """

    weight_scale: float  # set by the subclass before nn.Linear.__init__
    bias_scale: float

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


def applied_weights(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) a Linear layer applies, detached: ``forward(x) = x Wᵀ + b``
    (:class:`ScaledLinear` scales its raw tensors; bias ``None`` when the layer has none)."""
    if isinstance(layer, ScaledLinear):
        weight, bias = layer.effective_weight(), layer.effective_bias()
    else:
        weight, bias = layer.weight, layer.bias
    return weight.detach(), None if bias is None else bias.detach()


class NTKLinear(ScaledLinear):
    r"""Dense layer in the NTK parameterisation (Jacot et al. 2018, arXiv 1806.07572).

    .. math:: z = \frac{\sigma_w}{\sqrt{n_{in}}} W x + \sigma_b b, \qquad W_{ij}, b_i \sim N(0, 1)

    as neural-tangents' ``stax.Dense(W_std=sigma_w, b_std=sigma_b, parameterization="ntk")``.
    The scales live in ``weight_scale`` and ``bias_scale``; the trainable tensors are the unit
    Gaussians, so gradient descent on them is the NTK-parameterised dynamics.
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


class MuPLinear(ScaledLinear):
    r"""Dense layer in the maximal-update parameterisation μP for SGD (Yang & Hu 2021, arXiv
    2011.14522; μTransfer, Yang et al. 2022, arXiv 2203.03466), written with multipliers so that
    **one global SGD learning rate** gives every layer its μP update size.

    A dimension is *infinite* when it grows with the width (hidden sizes) and *finite* otherwise
    (input dimension, number of outputs). With :math:`m = n / n_0` the width multiplier of an
    infinite dimension of size n over ``base_width`` :math:`n_0` (and m = 1 for a finite one),

    .. math:: z = c_w\, w\, x + c_b\, b, \qquad c_w = \sqrt{m_{out}/m_{in}},\quad c_b = \sqrt{m_{out}}

    Gradient descent on ``w`` with step η moves the effective weight :math:`c_w w` with step
    :math:`c_w^2 η`: ``η·m`` for the input layer and the biases (mup's "vector-like" parameters),
    ``η·m_out/m_in`` for hidden matrices, ``η/m`` for the readout: exactly the learning rates
    ``mup.MuSGD`` assigns. Initialisation: the effective weights are N(0, σ_w²/fan_in) (as in the
    standard parameterisation) except the readout (finite output, infinite input), whose effective
    weight is N(0, σ_w²/(fan_in·m_in)), i.e. variance ∝ 1/width²: μP's readout (``mup.MuReadout``'s
    1/width multiplier on an SP-initialised layer rescaled by √m). Effective biases are N(0, σ_b²).
    At ``width == base_width`` every scale is 1 and the layer is the standard one.

    **Adam differs.** Adam normalises each coordinate's update to O(η) whatever the gradient's
    scale, so these multipliers do not give μP with one global Adam rate: μP for Adam scales the
    *learning rates* of hidden and readout matrices by 1/fan_in multiplier (``mup.MuAdam``), with
    input weights and biases at η (Yang et al. 2022, Table 3). Use SGD with this layer, or per-layer
    Adam learning rates.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 in_infinite: bool, out_infinite: bool, base_width: int = 64,
                 sigma_w: float = 2**0.5, sigma_b: float = 0.0):
        if base_width < 1:
            raise ValueError(f"base_width must be a positive width, got {base_width}.")
        m_in = in_features / base_width if in_infinite else 1.0
        m_out = out_features / base_width if out_infinite else 1.0
        self.m_in, self.m_out, self.base_width = m_in, m_out, base_width
        self.weight_scale = math.sqrt(m_out / m_in)
        self.bias_scale = math.sqrt(m_out)
        readout = in_infinite and not out_infinite
        self.effective_std = sigma_w / math.sqrt(in_features * (m_in if readout else 1.0))
        self.sigma_b = sigma_b
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        if not hasattr(self, "weight_scale"):  # nn.Linear.__init__ calls this before our scales
            return
        with torch.no_grad():
            self.weight.normal_(0.0, self.effective_std / self.weight_scale)
            if self.bias is not None:
                self.bias.normal_(0.0, 1.0).mul_(self.sigma_b / self.bias_scale)


MLP_PARAMETERIZATIONS = ("standard", "ntk", "mup")
MLP_NORMS = (None, "batch")


class MLP(nn.Module):
    """Fully connected network ``in_dim → widths... → out_dim``; inputs are flattened.

    ``parameterization="ntk"`` uses :class:`NTKLinear` for every layer (including the readout, as
    neural-tangents' stax does); ``"standard"`` uses ``nn.Linear`` initialised with
    W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²), the same function distribution at initialisation.
    ``"mup"`` uses :class:`MuPLinear` (μP for SGD, Yang & Hu 2021, arXiv 2011.14522): hidden
    widths are the infinite dimensions, ``base_width`` the width at which μP equals the standard
    parameterisation; with one global SGD learning rate, feature updates stay O(1) at every depth
    and width (``base_width`` is ignored by the other parameterisations).

    ``norm="batch"`` puts a ``BatchNorm1d`` after every hidden Linear (Linear → BN → activation):
    batch norm before the last layer plus weight decay makes neural collapse appear much sooner
    (Pan & Cao 2023, arXiv 2309.04644). Its output then depends on the batch while training, so
    call ``model.eval()`` before per-input analyses (kernels, Hessians). ``norm=None`` (default)
    has no normalisation.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "relu",
                 parameterization: str = "standard", sigma_w: float = 2**0.5,
                 sigma_b: float = 0.0, bias: bool = True, norm: str | None = None,
                 base_width: int = 64):
        super().__init__()
        widths = list(widths) if not isinstance(widths, int) else [widths]
        if not widths:
            raise ValueError("widths is empty: give at least one hidden width, e.g. widths=[128].")
        if any(int(w) < 1 for w in widths) or in_dim < 1 or out_dim < 1:
            raise ValueError(f"in_dim, widths and out_dim must be positive, got {in_dim}, "
                             f"{widths}, {out_dim}.")
        if parameterization not in MLP_PARAMETERIZATIONS:
            raise ValueError(f"parameterization={parameterization!r} is unknown; choose "
                             "'standard', 'ntk' or 'mup'.")
        check_choice(norm, "norm", MLP_NORMS)
        if parameterization == "mup" and norm is not None:
            raise ValueError("parameterization='mup' with norm='batch' is not μP (batch norm "
                             "undoes the layer scales); use norm=None.")
        make_act = lambda: make_activation(activation)  # noqa: E731 (validate the name up front)
        make_act()

        def linear(n_in, n_out, in_inf=True, out_inf=True):
            if parameterization == "mup":
                return MuPLinear(n_in, n_out, bias=bias, in_infinite=in_inf,
                                 out_infinite=out_inf, base_width=base_width, sigma_w=sigma_w,
                                 sigma_b=sigma_b)
            if parameterization == "ntk":
                return NTKLinear(n_in, n_out, bias=bias, sigma_w=sigma_w, sigma_b=sigma_b)
            return _standard_linear(n_in, n_out, bias, sigma_w, sigma_b)

        layers: list[nn.Module] = [nn.Flatten()]
        dims = [in_dim, *widths]
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(linear(n_in, n_out, in_inf=i > 0))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(make_act())
        self.features = nn.Sequential(*layers)
        self.head = linear(dims[-1], out_dim, out_inf=False)
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


class TinyCNN(nn.Module):
    """A small 1-D or 2-D CNN for exact curvature studies (arXiv 2305.09088's setting):
    ``depth`` convolutions of ``channels`` channels (kernel ``kernel_size``, "same" padding,
    stride 1), each followed by ``activation`` (``"linear"`` for a linear CNN, ``"relu"``...),
    then a fully connected readout to ``n_outputs`` of the flattened feature map
    (``readout="flatten"``) or of its spatial average (``readout="pool"``). Inputs are
    flattened vectors of ``in_channels * size**dim`` values. ``bias=False`` by default, so the
    linear CNN is a product of (Toeplitz) matrices.
    """

    def __init__(self, in_channels: int = 1, channels: int = 4, n_outputs: int = 2, *,
                 dim: int = 1, size: int = 8, kernel_size: int = 3, depth: int = 1,
                 activation: str = "linear", bias: bool = False, readout: str = "flatten"):
        super().__init__()
        if readout not in ("flatten", "pool"):
            raise ValueError(f"readout must be 'flatten' or 'pool', got {readout!r}.")
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2 (Conv1d or Conv2d), got {dim}.")
        if min(in_channels, channels, n_outputs, size, kernel_size, depth) < 1:
            raise ValueError("in_channels, channels, n_outputs, size, kernel_size and depth must "
                             "be positive.")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.in_channels, self.size, self.dim = in_channels, size, dim
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [conv(in_channels if i == 0 else channels, channels, kernel_size,
                            padding="same", bias=bias), make_activation(activation)]
        self.convs = nn.Sequential(*layers)
        pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.features = nn.Sequential(self.convs, *([pool] if readout == "pool" else []),
                                      nn.Flatten())
        n_features = channels * (1 if readout == "pool" else size**dim)
        self.head = nn.Linear(n_features, n_outputs, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), self.in_channels, *([self.size] * self.dim))
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
