r"""Surrogate networks with a known kernel regime.

* :class:`GatedReLUMLP` and :func:`to_relu` -- fixed-activation surrogate networks (Noy, Xu,
  Aflalo, Zelnik-Manor, Jin 2021, arXiv 2101.04243) and their ReLU re-expression, exact on the
  inputs its scale is chosen on; :func:`required_margin` says on which other inputs it is exact.
* :class:`OutputScale` -- ``alpha * model(x)``, the output scale that moves a network between the
  lazy (NTK) and the mean-field regime (Chizat, Oyallon, Bach 2019, arXiv 1812.07956).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from toolkit._checks import check_choice
from toolkit.models import NTKLinear

from ._context import _affine

__all__ = ["GatedReLUMLP", "OutputScale", "required_margin", "to_relu"]


class OutputScale(nn.Module):
    r"""``alpha * model(x)``: the output scale of lazy training (Chizat, Oyallon, Bach 2019,
    arXiv 1812.07956).

    On an NTK-parameterised one-hidden-layer net of width n, ``alpha = 1/sqrt(n)`` gives the
    mean-field scaling :math:`\frac1n\sum_i a_i\phi(w_i\cdot x)` (features move; train with the
    learning rate multiplied by n), ``alpha = 1`` the lazy NTK regime.
    """

    def __init__(self, model: nn.Module, alpha: float):
        super().__init__()
        self.model, self.alpha = model, float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.model(x)


def _make_linear(d_in, d_out, parameterization, sigma_w, sigma_b, bias):
    if parameterization == "ntk":
        return NTKLinear(d_in, d_out, bias=bias, sigma_w=sigma_w, sigma_b=sigma_b)
    return nn.Linear(d_in, d_out, bias=bias)


class GatedReLUMLP(nn.Module):
    r"""MLP whose ReLU gates are frozen at initialisation (Noy et al. 2021, arXiv 2101.04243).

    A frozen copy of the initial weights :math:`(G_l, c_l)` runs the initial ReLU network
    :math:`h^0_l = \mathrm{ReLU}(G_l h^0_{l-1} + c_l)`, :math:`h^0_0 = x`; the trained layers
    pass through its activation pattern:

    .. math:: h_l = \mathbf 1[G_l h^0_{l-1} + c_l > 0] \odot (W_l h_{l-1} + b_l),\qquad
              f(x) = W_{L+1} h_L + b_{L+1}.

    At initialisation :math:`W = G` so :math:`f` equals the ReLU network. The gates depend on
    x only, so f is multilinear in the layers' weights; with one hidden layer and a frozen head
    (``train_head=False``) it is linear in :math:`W_1`, its NTK is exactly constant and gradient
    descent on MSE converges geometrically, at rate :math:`(1 - \eta\lambda_{\min})` per step.

    Args:
        in_dim, widths, out_dim: layer sizes (inputs are flattened).
        parameterization: ``"ntk"`` (NTKLinear layers, weights N(0, 1)) or ``"standard"``.
        sigma_w, sigma_b: NTK-parameterisation scales.
        train_head: whether the output layer is trainable.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, *,
                 parameterization: str = "ntk", sigma_w: float = 2**0.5, sigma_b: float = 0.0,
                 bias: bool = True, train_head: bool = True):
        super().__init__()
        check_choice(parameterization, "parameterization", ("ntk", "standard"))
        widths = [int(w) for w in widths]
        if not widths:
            raise ValueError("widths must list at least one hidden layer width")
        dims = [in_dim, *widths]
        self.hidden = nn.ModuleList(
            _make_linear(a, b, parameterization, sigma_w, sigma_b, bias)
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = _make_linear(widths[-1], out_dim, parameterization, sigma_w, sigma_b, bias)
        self.head.requires_grad_(train_head)
        for i, layer in enumerate(self.hidden):
            g, c = _affine(layer)
            self.register_buffer(f"gate_weight_{i}", g.clone())
            self.register_buffer(f"gate_bias_{i}", c.clone())

    def gate(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen effective (G_i, c_i) of hidden layer i."""
        return getattr(self, f"gate_weight_{i}"), getattr(self, f"gate_bias_{i}")

    def trace(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per hidden layer: (pre-activation W h + b, gate pre-activation G h0 + c)."""
        h = h0 = x.flatten(1)
        out = []
        for i, layer in enumerate(self.hidden):
            g, c = self.gate(i)
            z0 = F.linear(h0, g, c)
            z = layer(h)
            out.append((z, z0))
            h, h0 = z * (z0 > 0).to(z.dtype), F.relu(z0)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z, z0 = self.trace(x)[-1]
        return z * (z0 > 0).to(z.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def as_relu_mlp(self) -> nn.Sequential:
        """The ordinary ReLU network with the same current layers (equal to ``self`` while the
        weights still equal the gates, i.e. at initialisation); ``requires_grad`` flags kept."""
        layers: list[nn.Module] = [nn.Flatten()]
        for layer in self.hidden:
            layers += [copy.deepcopy(layer), nn.ReLU()]
        return nn.Sequential(*layers, copy.deepcopy(self.head))


def to_relu(gated: GatedReLUMLP, x: torch.Tensor, *, margin: float = 2.0,
            dtype: torch.dtype | None = None) -> nn.Sequential:
    r"""A ReLU MLP (twice as wide) equal to ``gated`` on the inputs ``x`` (arXiv 2101.04243).

    One unit: for :math:`M \ge |w\cdot h| / |g\cdot h^0|` (M > 0),

    .. math:: \mathbf 1[g\cdot h^0 > 0]\,(w\cdot h) = \mathrm{ReLU}(w\cdot h + M g\cdot h^0)
              - \mathrm{ReLU}(M g\cdot h^0)

    (if :math:`g\cdot h^0>0` the first ReLU is active and the M terms cancel; otherwise both
    vanish). Biases are folded into w, g.

    **Where it is exact.** The scale of each unit is chosen on the finite set ``x``:
    :math:`M = \text{margin}\times\max_{x}|z|/|z^0|`. So the ReLU net equals the gated one on
    ``x`` (up to rounding, which grows with ``margin``) and on every other input where each unit
    still has :math:`M \ge |z|/|z^0|` (:func:`required_margin` computes, per input, the smallest
    ``margin`` that guarantees it). No finite M is exact on all inputs: near a gate's hyperplane
    :math:`z^0 = 0` the ratio is unbounded, and an unseen input with a ratio above M gets a
    different output (measured in notebook 01, section 5: with ``margin=2`` most unseen inputs
    of the toy run differ by a few percent of the output scale).

    Deep case. Hidden layer l of the ReLU net has units :math:`u^+_l = \mathrm{ReLU}(z_l + M_l
    z^0_l)` and :math:`u^-_l = \mathrm{ReLU}(M_l z^0_l) = M_l h^0_l` (M_l > 0 diagonal), where
    :math:`z_l = W_l h_{l-1} + b_l` and :math:`z^0_l = G_l h^0_{l-1} + c_l`. So the layer carries
    both streams of the gated net: :math:`h_l = u^+_l - u^-_l` (trained, gated) and
    :math:`h^0_l = M_l^{-1} u^-_l` (frozen gate network). Both pre-activations of layer l+1 are
    therefore linear in :math:`(u^+_l, u^-_l)`:

    .. math:: z_{l+1} = W_{l+1}u^+_l - W_{l+1}u^-_l + b_{l+1},\qquad
              z^0_{l+1} = G_{l+1} M_l^{-1} u^-_l + c_{l+1},

    giving the ReLU layer weights :math:`\begin{pmatrix} W & -W + M G M_{prev}^{-1}\\
    0 & M G M_{prev}^{-1}\end{pmatrix}` with biases :math:`(b + M c,\; M c)`; the first layer
    acts on x with :math:`(W_1 + M_1G_1;\ M_1G_1)`, the head is :math:`(W_{L+1}, -W_{L+1})`.
    Induction over l gives identical outputs on every input where each
    :math:`M_l \ge |z_l|/|z^0_l|` unit-wise, which is how ``M_l`` is chosen from ``x`` (times
    ``margin``). A unit with :math:`z^0 = 0 \ne z` on some input of ``x`` has no such M
    (``ValueError``).

    Args:
        gated: the surrogate to convert.
        x: the inputs the scales are chosen on (the conversion is exact there).
        margin: factor (>= 1) above the largest ratio seen on ``x``; a larger margin covers more
            unseen inputs at the price of rounding error (the weights grow like ``margin``).
        dtype: of the returned net (default: the gated model's; prefer float64 when checking
            agreement).

    Returns:
        ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` with widths 2 x ``widths``.
    """
    if not isinstance(gated, GatedReLUMLP):
        raise TypeError(f"gated must be a GatedReLUMLP, got {type(gated).__name__}")
    if margin < 1:
        raise ValueError(f"margin must be >= 1 (M must dominate |z|/|z0|), got {margin}")
    ref = gated.gate(0)[0]
    dtype = dtype or ref.dtype
    with torch.no_grad():
        x = x.to(device=ref.device, dtype=ref.dtype)
        scales = []
        for i, ratio in enumerate(_gate_ratios(gated, x)):
            if torch.isinf(ratio).any():
                raise ValueError(f"a gate pre-activation of hidden layer {i} is exactly 0 on x; "
                                 "no finite M makes the construction exact there")
            m = margin * ratio.amax(0)
            scales.append(torch.where(m > 0, m, torch.ones_like(m)).to(torch.float64))
        layers: list[nn.Module] = []
        prev = None
        for i, layer in enumerate(gated.hidden):
            w, b = (t.to(torch.float64) for t in _affine(layer))
            g, c = (t.to(torch.float64) for t in gated.gate(i))
            m = scales[i][:, None]
            mg = m * (g if prev is None else g / prev[None, :])
            if prev is None:
                top, bottom = w + mg, mg
            else:
                zeros = torch.zeros_like(w)
                top, bottom = torch.cat([w, -w + mg], 1), torch.cat([zeros, mg], 1)
            lin = nn.Linear(top.shape[1], 2 * w.shape[0], dtype=torch.float64)
            lin.weight.copy_(torch.cat([top, bottom], 0))
            lin.bias.copy_(torch.cat([b + m[:, 0] * c, m[:, 0] * c]))
            layers += [lin, nn.ReLU()]
            prev = scales[i]
        w, b = (t.to(torch.float64) for t in _affine(gated.head))
        head = nn.Linear(2 * w.shape[1], w.shape[0], dtype=torch.float64)
        head.weight.copy_(torch.cat([w, -w], 1))
        head.bias.copy_(b)
        layers.append(head)
    net = nn.Sequential(nn.Flatten(), *layers)
    return net.to(device=ref.device, dtype=dtype)


def _gate_ratios(gated: GatedReLUMLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Per hidden layer, the (N, width) ratios |z| / |z0| (inf where z0 = 0 and z != 0)."""
    out = []
    for z, z0 in gated.trace(x):
        ratio = z.abs() / z0.abs()
        out.append(torch.where(z == 0, torch.zeros_like(ratio), ratio))
    return out


def required_margin(gated: GatedReLUMLP, x_fit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Per input of ``x``, the smallest ``margin`` with which ``to_relu(gated, x_fit, margin=...)``
    is guaranteed to equal ``gated`` there.

    ``to_relu`` sets each unit's scale to ``margin`` times the largest ratio
    :math:`|z|/|z^0|` on ``x_fit``; the conversion is exact on an input where every unit of every
    hidden layer has :math:`M \ge |z|/|z^0|` there (a sufficient condition: it is the induction of
    ``to_relu``'s docstring). So the answer is :math:`\max_{l,j} r_{lj}(x) / \max_{x_f} r_{lj}(x_f)`:
    at most 1 on ``x_fit`` itself, ``inf`` on an input that lies on a gate's hyperplane
    (:math:`z^0 = 0`) and for no finite margin. Inputs with a value above the ``margin`` used may
    still come out right (the condition is sufficient, not necessary), but nothing guarantees it.

    Returns:
        float64 tensor of shape (len(x),).
    """
    if not isinstance(gated, GatedReLUMLP):
        raise TypeError(f"gated must be a GatedReLUMLP, got {type(gated).__name__}")
    ref = gated.gate(0)[0]
    with torch.no_grad():
        fit = _gate_ratios(gated, x_fit.to(device=ref.device, dtype=ref.dtype))
        new = _gate_ratios(gated, x.to(device=ref.device, dtype=ref.dtype))
        need = torch.zeros(len(x), dtype=torch.float64, device=ref.device)
        for r_fit, r in zip(fit, new):
            top = r_fit.amax(0).to(torch.float64)
            r = r.to(torch.float64)
            # to_relu gives a unit with max ratio 0 on x_fit the scale M = 1 at every margin
            ratio = torch.where(top > 0, r / torch.where(top > 0, top, torch.ones_like(top)),
                                torch.where(r <= 1, torch.zeros_like(r), torch.full_like(r, math.inf)))
            need = torch.maximum(need, ratio.amax(1))
    return need
