"""The HBCI model: hierarchical bi-directional conceptual interaction on an open_clip backbone.

The public surface mirrors the three exported graphs:
`encode_video(frames, mask) -> video pack`, `encode_text(ids, mask) -> text pack`,
`score(text_pack, video_pack) -> [Nt, Nv]`. Everything query-independent happens in the encoders; `score`
keeps only what needs the (text, video) pair. Pack keys are the graphs' input/output names.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hbci.backbone import backbone_info, create_backbone, frame_features, token_features
from hbci.config import ModelConfig
from hbci.layers import (ConceptMap, QueryPooling, TemporalTransformer, broadcast_matmul, l2norm, masked_mean,
                         masked_softmax)

__all__ = ["HBCI", "video_pack_names", "text_pack_names"]

LEVEL_NAMES = {1: "frame/word", 2: "segment/phrase", 3: "video/sentence"}


def video_pack_names(config: ModelConfig) -> list[str]:
    names = ["video_global", "video_mask"]
    if 1 in config.levels:
        names += ["frame_units", "frame_head"]
    if 2 in config.levels:
        names += ["segment_units", "segment_head"]
    if 3 in config.levels:
        names += ["pool_keys", "pool_values", "video_head"]
    return names


def text_pack_names(config: ModelConfig) -> list[str]:
    names = ["text_global", "word_mask"]
    if 1 in config.levels:
        names += ["word_units", "word_start", "word_head"]
    if 2 in config.levels:
        names += ["phrase_units", "phrase_start", "phrase_head"]
    if 3 in config.levels:
        names += ["pool_query", "sentence_concepts", "sentence_head"]
    return names


def _temperature(init: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(init)))


class ConceptLevel(nn.Module):
    """One level's concept machinery: concept maps per modality, factorised concept-weight heads (a text-side
    head computed in the text encoder, a video-side head in the video encoder), and the BCI temperatures."""

    def __init__(self, width: int, concepts: int):
        super().__init__()
        self.text_map = ConceptMap(width, concepts)
        self.video_map = ConceptMap(width, concepts)
        self.text_head = nn.Linear(width, concepts)
        self.video_head = nn.Linear(width, concepts)
        for head in (self.text_head, self.video_head):  # uniform concept weights at the start
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.log_tau_text_to_video = _temperature(0.1)
        self.log_tau_video_to_text = _temperature(0.1)

    def weighted_similarity(self, text: torch.Tensor, video: torch.Tensor, text_head: torch.Tensor,
                            video_head: torch.Tensor) -> torch.Tensor:
        """Concept vectors [..., K, d] of both sides -> sum_k softmax_k(h_t + h_v) * cos_k, shape [...]."""
        weights = torch.softmax(text_head + video_head, dim=-1)
        return (weights * (text * video).sum(-1)).sum(-1)


class HBCI(nn.Module):
    def __init__(self, config: ModelConfig, clip: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.clip = clip if clip is not None else create_backbone(config.backbone, config.pretrained)
        info = backbone_info(self.clip)
        self.embed_dim = width = info["embed_dim"]
        self.image_size = info["image_size"]
        self.temporal = (TemporalTransformer(width, config.temporal_layers, config.temporal_heads, config.num_frames,
                                             config.temporal_trend, config.temporal_curvature)
                         if config.temporal_layers > 0 else None)
        if 2 in config.levels:
            self.segment_pool = QueryPooling(width, config.num_segments)
            self.phrase_pool = QueryPooling(width, config.num_phrases)
        if 3 in config.levels:
            # X-Pool style text-guided pooling; identity init makes the first attention cosine-based.
            self.pool_query = nn.Linear(width, width)
            self.pool_key = nn.Linear(width, width)
            for lin in (self.pool_query, self.pool_key):
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.log_tau_pool = _temperature(0.1)
        self.levels = nn.ModuleDict({str(level): ConceptLevel(width, config.concepts) for level in config.levels})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # ----------------------------------------------------------------------------------------------- encoders
    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames [B, T, 3, H, W] (CLIP-normalised), mask [B, T] (1 valid, 0 padding) -> video pack."""
        return self.video_pack(self.frame_features(frames), mask)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The backbone's feature of every frame, [B, T, D]: independent of frame order."""
        return frame_features(self.clip, frames)

    def video_pack(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The video pack from per-frame features [B, T, D] (encode_video after the backbone): a clip's frames in
        another order reuse its features (the temporal negatives of the loss)."""
        mask = mask.to(feats.dtype)
        if self.temporal is not None:
            feats = self.temporal(feats, mask)
        video = masked_mean(feats, mask)
        pack = {"video_global": l2norm(video), "video_mask": mask}
        if 1 in self.config.levels:
            level = self.levels["1"]
            pack["frame_units"] = level.video_map.units(feats)
            pack["frame_head"] = level.video_head(video)
        if 2 in self.config.levels:
            level = self.levels["2"]
            pack["segment_units"] = level.video_map.units(self.segment_pool(feats, mask))
            pack["segment_head"] = level.video_head(video)
        if 3 in self.config.levels:
            level = self.levels["3"]
            pack["pool_keys"] = l2norm(self.pool_key(feats))
            pack["pool_values"] = level.video_map(feats).flatten(-2)  # normalised only after pooling
            pack["video_head"] = level.video_head(video)
        return pack

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """ids [B, L] int, mask [B, L] (1 for SOT..EOT) -> text pack."""
        words, sentence = token_features(self.clip, ids, mask)
        mask = mask.to(words.dtype)
        pack = {"text_global": l2norm(sentence), "word_mask": mask}
        if 1 in self.config.levels:
            level = self.levels["1"]
            pack["word_units"] = level.text_map.units(words)
            pack["word_start"] = l2norm(level.text_map(sentence))
            pack["word_head"] = level.text_head(sentence)
        if 2 in self.config.levels:
            level = self.levels["2"]
            pack["phrase_units"] = level.text_map.units(self.phrase_pool(words, mask))
            pack["phrase_start"] = l2norm(level.text_map(sentence))
            pack["phrase_head"] = level.text_head(sentence)
        if 3 in self.config.levels:
            level = self.levels["3"]
            pack["pool_query"] = l2norm(self.pool_query(sentence))
            pack["sentence_concepts"] = l2norm(level.text_map(sentence))
            pack["sentence_head"] = level.text_head(sentence)
        return pack

    # ----------------------------------------------------------------------------------------------- scoring
    def _interact(self, level: ConceptLevel, start, text_units, text_mask, video_units, video_mask):
        """Iterative BCI for all (text, video) pairs.

        start [Nt, K, d]; text_units [Nt, K, Lt, d]; text_mask [Nt, Lt] or None; video_units [1, Nv, K, U, d]
        (all pairs) or [Nt, 1, K, U, d] (paired), video_mask [1, Nv, U] or [Nt, 1, U] or None.
        Each iteration: the text state reads the video units of its concept (text -> video attention), that
        summary reads back the text units (video -> text attention) and updates the state (residual, then
        renormalised). A final text -> video read gives the video concept vector matching the final state.
        Returns (text concepts, video concepts), both [Nt, Nv, K, d] (text may broadcast on Nv; Nv is 1 paired).
        """
        state = start[:, None]                                        # [Nt, 1, K, d]
        text_units = text_units[:, None]
        text_mask = text_mask[:, None, None, None, :] if text_mask is not None else None
        video_mask = video_mask[:, :, None, None, :] if video_mask is not None else None
        tau_tv, tau_vt = level.log_tau_text_to_video.exp(), level.log_tau_video_to_text.exp()

        def read(query, units, mask, tau):
            logits = broadcast_matmul(query.unsqueeze(-2), units.transpose(-1, -2)) / tau   # [Nt, Nv, K, 1, U]
            attn = torch.softmax(logits, -1) if mask is None else masked_softmax(logits, mask)
            return broadcast_matmul(attn, units).squeeze(-2)

        for _ in range(self.config.bci_iterations):
            summary = read(state, video_units, video_mask, tau_tv)
            state = l2norm(state + read(summary, text_units, text_mask, tau_vt))
        return state, l2norm(read(state, video_units, video_mask, tau_tv))

    def level_similarities(self, text: dict, video: dict, with_concepts: bool = False, paired: bool = False):
        """Per-level similarities {level: [Nt, Nv]} of every text against every video; with `paired`, text i
        against video i only ({level: [N]}, for per-pair losses). With `with_concepts`, also the interacted
        (text, video) concept vectors of each level."""
        sims, concepts = {}, {}
        # Videos broadcast along a new text axis (all pairs), or keep their index beside the texts' (paired).
        vid = (lambda x: x[:, None]) if paired else (lambda x: x[None])
        if 1 in self.config.levels:
            level = self.levels["1"]
            t, v = self._interact(level, text["word_start"], text["word_units"], text["word_mask"],
                                  vid(video["frame_units"]), vid(video["video_mask"]))
            sims[1] = level.weighted_similarity(t, v, text["word_head"][:, None], vid(video["frame_head"]))
            concepts[1] = (t, v)
        if 2 in self.config.levels:
            level = self.levels["2"]
            t, v = self._interact(level, text["phrase_start"], text["phrase_units"], None,
                                  vid(video["segment_units"]), None)
            sims[2] = level.weighted_similarity(t, v, text["phrase_head"][:, None], vid(video["segment_head"]))
            concepts[2] = (t, v)
        if 3 in self.config.levels:
            level = self.levels["3"]
            values, mask = vid(video["pool_values"]), vid(video["video_mask"])
            if self.config.video_pooling == "text_guided":
                keys = vid(video["pool_keys"]).transpose(-1, -2)
                logits = (broadcast_matmul(text["pool_query"][:, None, None, :], keys)
                          / self.log_tau_pool.exp())                  # [Nt, Nv, 1, T]
                attn = masked_softmax(logits, mask[:, :, None, :])
                pooled = broadcast_matmul(attn, values).squeeze(-2)   # [Nt, Nv, D]
            else:
                pooled = masked_mean(values, mask)                    # [1, Nv, D]
            v = l2norm(pooled.unflatten(-1, (self.config.concepts, -1)))
            t = text["sentence_concepts"][:, None]
            sims[3] = level.weighted_similarity(t, v, text["sentence_head"][:, None], vid(video["video_head"]))
            concepts[3] = (t, v)
        if paired:
            sims = {level: sim[:, 0] for level, sim in sims.items()}
        return (sims, concepts) if with_concepts else sims

    def fuse(self, sims: dict[int, torch.Tensor]) -> torch.Tensor:
        if self.config.fusion == "finest":
            return sims[min(sims)]
        return torch.stack([sims[level] for level in sorted(sims)]).mean(0)

    def score_levels(self, text: dict, video: dict) -> dict[int, torch.Tensor]:
        """Per-level similarity matrices {level: [Nt, Nv]}."""
        return self.level_similarities(text, video)

    def score(self, text: dict, video: dict) -> torch.Tensor:
        """Fused similarity [Nt, Nv] of every text against every video."""
        return self.fuse(self.level_similarities(text, video))
