"""Losses: InfoNCE, concept decorrelation and cross-level distillation."""

import math

import torch

from hbci.loss import decorrelation_loss, distillation_loss, info_nce


def decorrelated(b: int, k: int, d: int, seed: int = 0) -> torch.Tensor:
    """[B, K, d] whose per-concept columns are zero-mean, unit-variance and mutually orthogonal over the batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        x = torch.randn(b, d, generator=g, dtype=torch.float64)
        x = x - x.mean(0)
        q, _ = torch.linalg.qr(x)          # orthonormal, zero-mean columns (the mean is orthogonal to them)
        out.append(q * math.sqrt(b))       # unit variance with the 1/B convention
    return torch.stack(out, 1)


def test_decorrelation_is_zero_for_decorrelated_matched_inputs():
    x = decorrelated(32, 4, 8)
    assert decorrelation_loss(x, x).item() < 1e-8


def test_decorrelation_is_positive_for_redundant_or_unrelated_inputs():
    x = decorrelated(32, 4, 8)
    redundant = x.clone()
    redundant[..., 1] = redundant[..., 0]  # two dimensions carry the same thing
    assert decorrelation_loss(redundant, redundant).item() > 0.01
    unrelated = decorrelated(32, 4, 8, seed=1)
    assert decorrelation_loss(x, unrelated).item() > 0.1


def test_decorrelation_scale_does_not_grow_with_d():
    small = decorrelation_loss(decorrelated(64, 2, 4), decorrelated(64, 2, 4, seed=3))
    large = decorrelation_loss(decorrelated(64, 2, 16), decorrelated(64, 2, 16, seed=3))
    assert 0.3 < (large / small).item() < 3


def test_info_nce_prefers_the_diagonal():
    good = torch.eye(4) * 0.9
    bad = torch.ones(4, 4) * 0.9 - torch.eye(4) * 0.9
    scale = torch.tensor(10.0)
    assert info_nce(good, scale) < math.log(4) < info_nce(bad, scale)


def test_distillation_is_zero_for_equal_matrices_and_positive_otherwise():
    a = torch.randn(5, 5)
    assert distillation_loss(a, a, 0.1).abs().item() < 1e-6
    assert distillation_loss(a, torch.randn(5, 5), 0.1).item() > 0


def test_stop_gradient_on_the_teacher_follows_the_switch():
    teacher = torch.randn(6, 6, requires_grad=True)
    student = torch.randn(6, 6, requires_grad=True)
    distillation_loss(teacher, student, 0.1, stop_grad=True).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    student.grad = None
    distillation_loss(teacher, student, 0.1, stop_grad=False).backward()
    assert teacher.grad.abs().sum() > 0 and student.grad.abs().sum() > 0
