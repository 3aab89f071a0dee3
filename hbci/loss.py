"""HBCI's training objective: symmetric InfoNCE per level and on the fused score, DiCoSA-style concept
decorrelation, cross-level similarity distillation, and temporal negatives.

Temporal negatives (`model.temporal_negative_weight`): a training window whose caption depends on time is also
scored, with the same caption, played backwards and (for two events) with its events in the other order, and the
loss asks the caption to prefer the window itself: a two-way cross-entropy, softplus(s * (neg - pos)), per level
and on the fused score. This follows the time-order-reversed negatives of Bagad, Tapaswi and Snoek, "Test of
Time: Instilling Video-Language Models with a Sense of Time" (CVPR 2023), with differences: the negative is the
very window's frames reordered (features reused, so it costs the temporal layers and scorer, not the backbone),
only the caption of that window is scored against it (never the in-batch captions: another clip's caption may
describe the reversed frames, e.g. a "moves right" variant of a "moves left" clip), and it is a separate two-way
term beside InfoNCE rather than extra columns of it.

With `model.swapped_caption_negatives`, the text side gets the same term, as in that paper: a two-event window
is also scored against its own caption with the two clauses exchanged around the connective
(`hbci.caption_order`), and asked to prefer its caption. Every word stays, so only the connective's meaning
separates the two; in-batch captions of order-swapped clips use other sentence frames and rarely force that.

The rotated window (its frames [cut:] before [:cut]) is given away by the jump at its seam, which no real order
swap has. With `model.rendered_order_negatives` a two-event window is also scored against the same window of its
scene rendered with the events in the other order (the training split's `order_negative` videos): the same
two-way term, with nothing but the order to tell them apart.

With `model.partial_window_negatives` a two-event window is also scored against a window that holds one of its
events whole and little of the other (`hbci.sampling.partial_windows`, spliced from the batch's frame features):
what a stream shows its caption a second early or late, where look-alike captions fired.

`model.temporal_negative_margin` asks the video-side temporal negatives (reversed, rotated, rendered, partial
windows) to score that much below their positive, and `model.caption_negative_margin` the swapped caption below
the window's own (the hinge margin of ranking losses such as VSE++, inside the softplus). A standing query alerts
on an absolute threshold, so a look-alike caption that loses to the true one by a few hundredths still fires;
without a margin the term stops pushing once the gap is a few times 1/scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hbci.model import HBCI

__all__ = ["info_nce", "decorrelation_loss", "distillation_loss", "temporal_negative_loss", "hbci_loss",
           "reversed_order", "swapped_order", "reorder"]


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


def reversed_order(mask: torch.Tensor) -> torch.Tensor:
    """Frame order [B, T] playing each clip's valid frames (a prefix, as the loaders pad) backwards."""
    t = torch.arange(mask.shape[1], device=mask.device)[None]
    n = mask.sum(1, keepdim=True).long()
    return torch.where(t < n, n - 1 - t, t)


def swapped_order(mask: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Frame order [B, T] putting each clip's valid frames [cut:] before [:cut] (cut 0: unchanged)."""
    t = torch.arange(mask.shape[1], device=mask.device)[None]
    n = mask.sum(1, keepdim=True).long().clamp(min=1)
    return torch.where(t < n, (t + cut[:, None].long()) % n, t)


def reorder(feats: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Frame features [B, T, D] in another frame order [B, T]."""
    return feats.gather(1, order[..., None].expand(-1, -1, feats.shape[-1]))


def temporal_negative_loss(positive: torch.Tensor, negative: torch.Tensor, valid: torch.Tensor,
                           scale: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean over valid rows of softplus(scale * (negative + margin - positive)): the two-way cross-entropy of a
    caption between its own window [N] and that window's temporal negative [N], asking the negative to score
    `margin` below; 0 when no row is valid."""
    terms = F.softplus(scale * (negative + margin - positive)) * valid
    return terms.sum() / valid.sum().clamp(min=1.0)


def _diagonal(x: torch.Tensor) -> torch.Tensor:
    """All-pairs tensor [Nt or 1, Nv or 1, ...] (a side that does not depend on the other has 1) -> matched pairs
    [B, ...]."""
    n = max(x.shape[0], x.shape[1])
    return x.expand(n, n, *x.shape[2:]).diagonal(0, 0, 1).movedim(-1, 0)


def hbci_loss(model: HBCI, text: dict, video: dict,
              negatives: dict[str, tuple[dict, dict, torch.Tensor]] | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one batch of matched (text, video) packs, and its parts for logging.

    negatives: {name: (text pack, video pack, valid [B] 0/1)} whose i-th pair is the i-th matched pair with one
    side replaced by its temporal negative, used when `temporal_negative_weight` > 0."""
    cfg = model.config
    scale = model.logit_scale.clamp(max=4.6052).exp()  # CLIP's cap at 100
    sims, concepts = model.level_similarities(text, video, with_concepts=True)
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
    if cfg.temporal_negative_weight > 0 and negatives:
        keyed = dict(sims, fused=model.fuse(sims)) if len(sims) > 1 else dict(sims)
        terms, count = [], 0.0
        for name, (text_side, video_side, valid) in negatives.items():
            neg = model.level_similarities(text_side, video_side, paired=True)
            if len(neg) > 1:
                neg["fused"] = model.fuse(neg)
            margin = cfg.caption_negative_margin if name == "caption" else cfg.temporal_negative_margin
            own = torch.stack([temporal_negative_loss(keyed[k].diagonal(), neg[k], valid, scale, margin)
                               for k in keyed])
            parts[f"temporal_{name}"] = own.mean().detach()  # logged only: which negatives are learnt
            terms.append(own.sum() * valid.sum())
            count = count + valid.sum() * len(keyed)
        temporal = torch.stack(terms).sum() / count.clamp(min=1.0)
        parts["temporal"] = temporal
        total = total + cfg.temporal_negative_weight * temporal
    parts["total"] = total
    return total, {k: float(v.detach()) for k, v in parts.items()}
