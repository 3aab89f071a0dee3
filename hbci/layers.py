"""Building blocks of HBCI: masked softmax, the temporal transformer, learnable query pooling, concept maps.

Attention is written with plain matmul/softmax (no fused kernels) so that every block exports to ONNX and
quantizes on MatMul nodes; masks are float tensors (1 valid, 0 padding) that travel through the graphs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["masked_softmax", "masked_mean", "l2norm", "broadcast_matmul", "time_trend", "time_curvature",
           "TemporalTransformer", "QueryPooling", "ConceptMap"]

# Large enough that exp() underflows to exactly 0 in float32 and float16, small enough to stay finite in fp16.
_MASK_FILL = -1e4


def l2norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-6)


def broadcast_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with broadcast batch dimensions, without copying either side across the other's batch.

    torch.matmul first expands both operands to the full batch shape and copies them: scoring every text against
    every video in training copied each video's units once per text and ran one tiny product per pair (a third
    of a CPU training step). einsum folds a side's broadcast dimensions into its matrix instead, the same
    products in a few large ones. Exported graphs keep MatMul, as before (ONNX Runtime and TensorRT take it with
    broadcasting; TensorRT's ONNX parser limits Einsum), so the runtime's graphs do not change.
    """
    if torch.onnx.is_in_onnx_export():
        return a @ b
    return torch.einsum("...ij,...jk->...ik", a, b)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax where mask == 0 gets exactly zero weight (so padding content can never leak into a result)."""
    return torch.softmax(torch.where(mask > 0.5, logits, torch.full_like(logits, _MASK_FILL)), dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [..., N, D], mask [..., N] -> [..., D]."""
    weights = mask.unsqueeze(-1)
    return (x * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(w // self.heads)
        attn = masked_softmax(logits, mask[:, None, None, :])
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


def time_trend(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trend of features over time, [B, T, D] -> [B, D]: sum_t c_t x_t with c_t = (t - mean t) over the valid
    frames, scaled so that sum |c_t| = 1 (so, roughly, half of late frames minus early frames). It flips sign when
    the frames are played backwards, and is 0 for a single frame."""
    t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None]
    return _time_weighted_sum(x, mask, t)


def time_curvature(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The curvature of features over time, [B, T, D] -> [B, D]: sum_t c_t x_t with c_t the second Legendre
    polynomial of the frame's time (mapped to [-1, 1] over the valid frames), centred over them and scaled so that
    sum |c_t| = 1; `time_trend` is the first. For a clip that changes one way in its first half and another way
    in its second, it is roughly the second change minus the first: two events played in the other order flip its
    sign, where the trend (both changes together) moves only a little. 0 for one or two frames, and for features
    that change at a constant rate."""
    t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None]
    n = mask.sum(1, keepdim=True)
    u = (t - (t * mask).sum(1, keepdim=True) / n.clamp(min=1.0)) / ((n - 1) / 2).clamp(min=1.0)
    return _time_weighted_sum(x, mask, (3 * u * u - 1) / 2)


def _time_weighted_sum(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t c_t x_t over the valid frames, c the per-frame weights [B or 1, T] centred over the valid frames and
    scaled so that sum |c_t| = 1 (0 where they are all equal)."""
    mean = (weights * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0)
    c = (weights - mean) * mask
    c = c / c.abs().sum(1, keepdim=True).clamp(min=1e-6)
    return (c[..., None] * x).sum(1)


class TemporalTransformer(nn.Module):
    """CLIP4Clip "seqTransf": frame features plus a position embedding through a small transformer, added back
    to the frame features (residual), with padded frames masked out as keys.

    The frame features are layer-normalised before the position embedding is added, and the embedding starts at
    the same scale (unit variance): CLIP's projected features have norms near 15, and a position embedding of
    std 0.01 added to them (CLIP4Clip's scale) stayed 1.5% of the input after training, too little for attention
    to tell which frame came first. The zero-initialised output projection keeps the transformer's path the
    identity at the start, whatever the internal scale.

    With `trend`, every frame also gets the clip's feature trend (`time_trend` of the normalised frames, through a
    linear map that starts as the identity). Without it the whole model is blind to frame order at the start: a clip
    and its reversal score alike, the contrastive loss then pulls "moves left" and "moves right" captions to one
    embedding, and from there neither side gets a gradient to tell them apart (measured: README, direction).

    With `curvature`, every frame also gets the clip's feature curvature (`time_curvature`, a linear map that starts
    as the identity) for the same reason one order up: two events in the other order have the same start and end
    states and nearly the same trend, so without it a fresh model scores a clip and its order swap almost alike.
    """

    def __init__(self, width: int, layers: int, heads: int, num_frames: int, trend: bool = False,
                 curvature: bool = False):
        super().__init__()
        self.ln_in = nn.LayerNorm(width)
        # The trend and curvature paths start as the identity, so a clip differs from its reversal (trend) and from
        # its events in the other order (curvature) from step 0.
        self.trend = nn.Linear(width, width) if trend else None
        self.curvature = nn.Linear(width, width) if curvature else None
        for path in (self.trend, self.curvature):
            if path is not None:
                nn.init.eye_(path.weight)
                nn.init.zeros_(path.bias)
        self.position = nn.Parameter(torch.zeros(num_frames, width))
        nn.init.normal_(self.position, std=1.0)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        # Zero-init the last projection so the module starts as the identity on the frame features.
        self.proj = nn.Linear(width, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed = self.ln_in(frames)
        x = normed + self.position[: frames.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        out = frames + self.proj(self.ln(x))
        if self.trend is not None:
            out = out + self.trend(time_trend(normed, mask))[:, None]
        if self.curvature is not None:
            out = out + self.curvature(time_curvature(normed, mask))[:, None]
        return out


class QueryPooling(nn.Module):
    """A few learned queries attend over units (frames or words), masked: segments / phrases for level 2.

    Deterministic and export-friendly, unlike token-clustering merges.
    """

    def __init__(self, width: int, num_queries: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, width) / math.sqrt(width))
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, units: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln(units)
        logits = self.queries @ self.key(x).transpose(-1, -2) * self.scale      # [B, Q, N]
        attn = masked_softmax(logits, mask.unsqueeze(1))
        # Residual on the masked mean keeps the pooled units in the frame/word feature space from the start.
        return attn @ self.value(x) + masked_mean(units, mask).unsqueeze(1)


class ConceptMap(nn.Module):
    """Concept decoupling: a linear map (identity init) then a split into K concepts of width D/K."""

    def __init__(self, width: int, concepts: int):
        super().__init__()
        if width % concepts:
            raise ValueError(f"joint width {width} is not divisible by {concepts} concepts")
        self.concepts = concepts
        self.linear = nn.Linear(width, width)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> un-normalised [..., K, d]."""
        return self.linear(x).unflatten(-1, (self.concepts, -1))

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, D] -> L2-normalised concept units laid out concept-major, [B, K, N, d]."""
        return l2norm(self(x)).transpose(1, 2)
