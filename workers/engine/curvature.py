"""The sharpness of the training loss: the Hessian's largest eigenvalue, and its trace.

λ_max is found by power iteration on Hessian-vector products (Pearlmutter 1994's exact Hv by
double backward: Hv = ∂(∇L·v)/∂θ), as PyHessian (Yao et al. 2020) and Cohen et al. 2021 do;
tr(H) by Hutchinson's estimator E[zᵀHz] over Rademacher z (Hutchinson 1990; Avron & Toledo
2011). Both are measured on one fixed, seeded subset of the training set, so that successive
measurements see the same loss and differ only because the weights moved; with full-batch
training on at most `batch` examples it is the training loss itself.

Power iteration converges to the eigenvalue of largest magnitude. On the loss surfaces
gradwatch trains that is the positive top eigenvalue (negative ones are small by
comparison, Ghorbani et al. 2019), so the Rayleigh quotient vᵀHv is reported as λ_max, with
its sign: a negative value says the estimate found the negative end of the spectrum. Each
measurement starts from the previous one's eigenvector (the sharpness moves slowly), so a
fixed number of iterations suffices and nothing is read on the host: the results stay on the
device until the flush.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from .config import CurvatureConfig

Vectors = list[torch.Tensor]  # one tensor per parameter, shaped like it
LossAt = Callable[[], torch.Tensor]  # the curvature batch's loss at the current weights


def hessian_vector_product(gradients: Vectors, params: Vectors, vector: Vectors) -> Vectors:
    """Hv, from ∇L built with create_graph=True: the gradient of ∇L·v (Pearlmutter 1994)."""
    products = torch.autograd.grad(gradients, params, grad_outputs=vector, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, products)]


def _dot(a: Vectors, b: Vectors) -> torch.Tensor:
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b)]).sum()


def _norm(vectors: Vectors) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(vectors)))


def top_eigenvalue(gradients: Vectors, params: Vectors, start: Vectors, iterations: int) -> tuple[torch.Tensor, Vectors]:
    """(λ, v): the Rayleigh quotient vᵀHv after `iterations` power steps from `start`, 0-d on
    the device, and the unit eigenvector estimate to start the next measurement from."""
    vector = torch._foreach_div(start, _norm(start))
    eigenvalue = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    for _ in range(iterations):
        product = hessian_vector_product(gradients, params, vector)
        eigenvalue = _dot(vector, product)  # ‖v‖ = 1
        # 1e-30 keeps a zero Hessian (a dead network) from dividing by zero; no host check.
        vector = torch._foreach_div(product, _norm(product).clamp_min(1e-30))
    return eigenvalue.detach(), [v.detach() for v in vector]


def hutchinson_trace(gradients: Vectors, params: Vectors, samples: int, generator: torch.Generator) -> torch.Tensor:
    """tr(H) ≈ mean over `samples` Rademacher vectors z of zᵀHz (Hutchinson 1990), 0-d."""
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    for _ in range(samples):
        probe = [_rademacher(p, generator) for p in params]
        total = total + _dot(probe, hessian_vector_product(gradients, params, probe))
    return (total / samples).detach()


def _rademacher(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, like.shape, generator=generator, device=generator.device)
    return bits.to(like.dtype).mul_(2).sub_(1)


class CurvatureProbe:
    """Measures λ_max (and tr(H)) every `config.every` training steps, before the step's update.

    `measure()` leaves its results on the device; `take(last_step)` copies every pending
    measurement up to `last_step` to the host at once and hands them out as series.
    """

    def __init__(self, config: CurvatureConfig, params: Vectors, loss_at: LossAt, seed: int, cudnn: bool) -> None:
        self.config = config
        self._params = params
        self._loss_at = loss_at
        self._cudnn = cudnn
        device = params[0].device
        self._generator = torch.Generator(device=device).manual_seed(seed + 7_919)
        self._vector = [torch.randn(p.shape, generator=self._generator, device=device, dtype=p.dtype) for p in params]
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []  # (2,) per measurement: λ_max, tr(H) (NaN without trace)

    def due(self, step: int) -> bool:
        return self.config.every > 0 and step % self.config.every == 0

    def measure(self, step: int) -> None:
        # cuDNN's RNN kernels have no double backward; the native ones do.
        flags = torch.backends.cudnn.flags(enabled=False) if self._cudnn else nullcontext()
        with flags:
            loss = self._loss_at()
            gradients = list(torch.autograd.grad(loss, self._params, create_graph=True))
            eigenvalue, self._vector = top_eigenvalue(gradients, self._params, self._vector, self.config.iterations)
            if self.config.trace_samples:
                trace = hutchinson_trace(gradients, self._params, self.config.trace_samples, self._generator)
            else:
                trace = torch.full((), float("nan"), dtype=eigenvalue.dtype, device=eigenvalue.device)
        self._steps.append(step)
        self._values.append(torch.stack([eigenvalue, trace]))

    def take(self, last_step: int) -> dict[tuple[str, None], tuple[np.ndarray, np.ndarray]]:
        """Pending measurements at steps ≤ last_step, as (steps int64 (K,), values float64 (K,))."""
        count = sum(1 for s in self._steps if s <= last_step)
        if not count:
            return {}
        host = torch.stack(self._values[:count]).to("cpu", torch.float64).numpy()  # sync: once per flush, (K, 2)
        steps = np.asarray(self._steps[:count], dtype=np.int64)
        self._steps, self._values = self._steps[count:], self._values[count:]
        series = {("hessian_max_eig", None): (steps, host[:, 0])}
        if self.config.trace_samples:
            series[("hessian_trace", None)] = (steps, host[:, 1])
        return series


def curvature_subset(count: int, size: int, seed: int) -> torch.Tensor:
    """The indices of the fixed subset the curvature is measured on (CPU, int64)."""
    if size >= count:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed + 104_729)
    return torch.randperm(count, generator=generator)[:size].sort().values
