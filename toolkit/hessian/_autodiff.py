r"""Second derivatives through any model (private to :mod:`toolkit.hessian`).

Two things stop a Hessian-vector product on an ordinary PyTorch model that trains fine:

* **Fused attention kernels.** ``F.scaled_dot_product_attention`` (inside ``nn.MultiheadAttention``
  and ``nn.TransformerEncoderLayer``) dispatches to a fused flash / memory-efficient kernel whose
  backward has no derivative of its own ("derivative for
  aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented") and no
  forward-mode rule. The *math* kernel is the same function written with matmul and softmax, so it
  differentiates twice (forward-over-reverse too): :func:`second_order` runs every forward under
  ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``.
* **The eval-mode "fast path".** In eval mode (no grad, or no parameter requiring grad),
  ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` call one fused C++ kernel for the
  whole layer; its submodules are then never called (forward hooks on them do not fire) and its
  outputs differ from the differentiated path by rounding. :func:`second_order` switches it off
  (``torch.backends.mha.set_fastpath_enabled(False)``, restored on exit; a process-wide flag, so
  do not run other eval-mode transformer code in another thread meanwhile).

Anything else without a second derivative (a custom ``autograd.Function`` marked
``@once_differentiable``, ``F.ctc_loss``, an extension kernel) raises
:class:`NotTwiceDifferentiableError` naming the operation and what to do, instead of PyTorch's
message — or, for ``once_differentiable``, instead of the silently zero product autograd gives.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

__all__ = ["NotTwiceDifferentiableError", "second_order", "check_graph"]


class NotTwiceDifferentiableError(RuntimeError):
    """The loss cannot be differentiated twice through some operation of the model or loss."""


def _math_attention():
    """A context selecting the math kernel of scaled-dot-product attention (torch ≥ 2.3)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the CUDA-only switch of that time
        cuda = getattr(torch.backends, "cuda", None)
        if cuda is not None and hasattr(cuda, "sdp_kernel"):
            return cuda.sdp_kernel(enable_flash=False, enable_math=True,
                                   enable_mem_efficient=False)
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


_MISSING = (
    re.compile(r"derivative for (?P<op>[\w:.]+) is not implemented"),
    re.compile(r"forward AD with (?P<op>[\w:.]+) that does not support it"),
    re.compile(r"(?P<op>jvp) function for custom autograd\.Function"),
    re.compile(r"(?P<op>autograd\.Function) with functorch transforms"),
    re.compile(r"differentiate twice a function that was marked with (?P<op>@once_differentiable)"),
)


def _explain(err: BaseException, method: str) -> NotTwiceDifferentiableError | None:
    text = str(err)
    for pattern in _MISSING:
        match = pattern.search(text)
        if match is None:
            continue
        op = match.group("op")
        forward_mode = "forward AD" in text or "jvp" in text or "functorch" in text
        if forward_mode:
            fix = ("Use method='rev-rev' (autograd.grad twice), which needs no forward-mode rule; "
                   "for a custom autograd.Function, implement its jvp and setup_context.")
        else:
            fix = ("Replace it by an equivalent built from differentiable operations (attention "
                   "already runs on the math kernel here), or restrict params= to parameters "
                   "the operation does not depend on.")
        return NotTwiceDifferentiableError(
            f"The Hessian-vector product (method={method!r}) needs second derivatives, and PyTorch "
            f"has none for {op} (its backward is not itself differentiable"
            f"{' in forward mode' if forward_mode else ''}). {fix} PyTorch said: "
            f"{text.splitlines()[0][:200]}")
    return None


@contextlib.contextmanager
def second_order(method: str = "rev-rev") -> Iterator[None]:
    """Run forward passes so that they can be differentiated twice (the math attention kernel, no
    fused eval-mode fast path) and turn PyTorch's missing-derivative errors into
    :class:`NotTwiceDifferentiableError`."""
    with _no_fastpath(), _math_attention():
        try:
            yield
        except (RuntimeError, NotImplementedError) as err:
            if isinstance(err, NotTwiceDifferentiableError):
                raise
            ours = _explain(err, method)
            if ours is None:
                raise
            raise ours from err


def _once_differentiable(node) -> bool:
    cls = getattr(node, "_forward_cls", None)
    backward = getattr(cls, "backward", None)
    code = getattr(backward, "__code__", None)
    return code is not None and "once_differentiable" in getattr(code, "co_qualname", "") or (
        code is not None and code.co_name == "wrapper"
        and code.co_filename.endswith("autograd/function.py"))


def check_graph(loss: torch.Tensor) -> None:
    """Refuse a loss whose graph holds a custom ``autograd.Function`` marked ``@once_differentiable``:
    its backward runs without recording a graph, so a reverse-over-reverse product would silently
    miss every term that passes through it (autograd reports no error)."""
    stack, seen = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if _once_differentiable(node):
            name = getattr(node._forward_cls, "__qualname__", type(node).__name__)
            raise NotTwiceDifferentiableError(
                f"The loss passes through the custom autograd.Function {name}, whose backward is "
                "marked @once_differentiable: it cannot be differentiated again, so the Hessian-"
                "vector product would silently miss its contribution. Give it a backward written "
                "with differentiable torch operations (drop @once_differentiable), or restrict "
                "params= to parameters after it.")
        stack.extend(fn for fn, _ in node.next_functions)
