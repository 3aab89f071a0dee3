"""HBCI's training objective: symmetric InfoNCE per level and on the fused score, DiCoSA-style concept
decorrelation, and cross-level similarity distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hbci.model import HBCI

__all__ = ["info_nce", "decorrelation_loss", "distillation_loss", "hbci_loss"]


def info_nce(sim: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a square similarity matrix whose diagonal holds the matched pairs."""
    logits = sim * logit_scale
    target = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def decorrelation_loss(text: torch.Tensor, video: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Concept decorrelation on matched pairs, text and video concept vectors [B, K, d].

    Per concept k, both sides are standardised over the batch and their cross-correlation matrix C_k [d, d] is
    pulled toward the identity: the diagonal toward 1 (the two modalities agree within a concept, dimension by
    dimension) and the off-diagonal toward 0 (no redundant dimensions). The diagonal term is averaged over the
    d dimensions and the off-diagonal term over its d(d-1) entries, so the weight means the same at any d.
    (DiCoSA's released code divides by the number of words instead of d.)
    """
    b, k, d = text.shape
    zt = (text - text.mean(0)) / (text.std(0, unbiased=False) + eps)
    zv = (video - video.mean(0)) / (video.std(0, unbiased=False) + eps)
    corr = torch.einsum("bki,bkj->kij", zt, zv) / b                         # [K, d, d]
    diagonal = torch.diagonal(corr, dim1=-2, dim2=-1)
    on = (1 - diagonal).pow(2).mean(-1)
    off = (corr.pow(2).sum((-2, -1)) - diagonal.pow(2).sum(-1)) / max(d * (d - 1), 1)
    return (on + off).mean()


def distillation_loss(teacher: torch.Tensor, student: torch.Tensor, temperature: torch.Tensor | float,
                      stop_grad: bool = True) -> torch.Tensor:
    """KL(teacher || student) over row-softmax (text -> video) and column-softmax (video -> text)
    distributions of two batch similarity matrices at a temperature."""
    if stop_grad:
        teacher = teacher.detach()
    t, s = teacher / temperature, student / temperature
    rows = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")
    cols = F.kl_div(F.log_softmax(s, 0).t(), F.log_softmax(t, 0).t(), log_target=True, reduction="batchmean")
    return (rows + cols) / 2


def _diagonal(x: torch.Tensor) -> torch.Tensor:
    """All-pairs tensor [Nt, Nv or 1, ...] -> matched pairs [B, ...]."""
    n = x.shape[0]
    return x.expand(n, n, *x.shape[2:]).diagonal(0, 0, 1).movedim(-1, 0)


def hbci_loss(model: HBCI, text: dict, video: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one batch of matched (text, video) packs, and its parts for logging."""
    cfg = model.config
    scale = model.logit_scale.clamp(max=4.6052).exp()  # CLIP's cap at 100
    sims, concepts = model._level_similarities(text, video, with_concepts=True)
    parts: dict[str, torch.Tensor] = {f"nce_{level}": info_nce(sim, scale) for level, sim in sims.items()}
    if len(sims) > 1:
        parts["nce_fused"] = info_nce(model.fuse(sims), scale)
    total = sum(parts.values())
    if cfg.decorrelation_weight > 0 and cfg.concepts > 1:
        dec = torch.stack([decorrelation_loss(_diagonal(t), _diagonal(v)) for t, v in concepts.values()]).mean()
        parts["decorrelation"] = dec
        total = total + cfg.decorrelation_weight * dec
    if cfg.distill_weight > 0 and len(sims) > 1:
        chain = sorted(sims) if cfg.distill_direction == "fine_to_coarse" else sorted(sims, reverse=True)
        tau = 1.0 / scale.detach() if cfg.distill_temperature is None else cfg.distill_temperature
        kl = torch.stack([distillation_loss(sims[a], sims[b], tau, cfg.distill_stop_grad)
                          for a, b in zip(chain, chain[1:])]).mean()
        parts["distill"] = kl
        total = total + cfg.distill_weight * kl
    parts["total"] = total
    return total, {k: float(v.detach()) for k, v in parts.items()}
