from __future__ import annotations

import torch

from workers.engine.clipping import clip_, clip_by_norm_, clip_by_value_, total_norm


def gradients(scale: float) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(5, 3, generator=generator) * scale, torch.randn(7, generator=generator) * scale]


def flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads]).double()


def test_norm_clipping_reaches_the_threshold_and_keeps_the_direction() -> None:
    grads = gradients(10.0)
    original = flat(grads)
    before, after = clip_(grads, "norm", max_norm=1.0, max_value=0.0)
    clipped = flat(grads)
    assert float(before) > 1.0
    assert abs(float(clipped.norm()) - 1.0) < 1e-6
    assert abs(float(after) - 1.0) < 1e-6
    cosine = torch.dot(original, clipped) / (original.norm() * clipped.norm())
    assert abs(float(cosine) - 1.0) < 1e-12
    # Alg. 1 rescales by threshold / ‖g‖ exactly.
    torch.testing.assert_close(clipped, original / original.norm(), rtol=1e-6, atol=0)


def test_norm_clipping_below_the_threshold_changes_nothing() -> None:
    grads = gradients(0.01)
    original = [g.clone() for g in grads]
    before, after = clip_(grads, "norm", max_norm=1.0, max_value=0.0)
    for g, o in zip(grads, original):
        assert torch.equal(g, o)  # multiplied by exactly 1.0
    assert float(before) == float(after) < 1.0


def test_zero_gradient_is_left_at_zero() -> None:
    grads = [torch.zeros(3)]
    clip_by_norm_(grads, 1.0, total_norm([grads[0].norm()]))
    assert torch.equal(grads[0], torch.zeros(3))


def test_value_clipping_clamps_each_element() -> None:
    grads = [torch.tensor([-3.0, -0.5, 0.2, 4.0])]
    clip_by_value_(grads, 1.0)
    assert torch.equal(grads[0], torch.tensor([-1.0, -0.5, 0.2, 1.0]))


def test_total_norm_is_the_norm_of_all_parameters_together() -> None:
    grads = gradients(1.0)
    expected = flat(grads).norm()
    assert abs(float(total_norm([g.norm() for g in grads])) - float(expected)) < 1e-5
