"""Retrieval metrics for text-video retrieval: R@1/5/10, median and mean rank, with an explicit tie policy.

Pure numpy (no torch), so the export validation and the runtime's accuracy gates use the same code as training.

Conventions:

* A similarity matrix has one row per query and one column per item; higher means more similar.
* Ranks are 1-based: rank 1 means the target was retrieved first.
* Ties are never broken by array order (which would hand a lucky rank 1 to whatever comes first):
  - ``"pessimistic"`` (default): rank = 1 + number of *other* items scoring >= the target. A model that gives
    every item the same score gets rank n, the worst.
  - ``"optimistic"``: rank = 1 + number of items scoring strictly more than the target.
  Reporting both brackets the effect of ties; they agree whenever scores are distinct.
* NaN scores are rejected (ValueError): NaN compares false with everything and would yield rank 1 silently.
* Test-time normalisations such as the dual softmax (`dual_softmax`) are separate functions; the metrics never
  apply them on their own, so the caller reports them as separate numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["TIE_POLICIES", "ranks", "summarize_ranks", "retrieval_metrics", "multi_caption_ranks",
           "multi_caption_metrics", "paired_difference", "paired_hit_difference", "dual_softmax", "format_metrics"]

TIE_POLICIES = ("pessimistic", "optimistic")
_RECALL_AT = (1, 5, 10)
# Matrix elements per block when counting: bounds the temporary boolean matrices on large galleries.
_BLOCK_ELEMENTS = 1 << 24


def _check_ties(ties: str) -> None:
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {TIE_POLICIES}, got {ties!r}")


def _as_scores(sim: np.ndarray, name: str = "sim") -> np.ndarray:
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"{name} must be 2-D [queries, items], got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {sim.shape})")
    if not (np.issubdtype(sim.dtype, np.floating) or np.issubdtype(sim.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {sim.dtype}")
    if np.issubdtype(sim.dtype, np.floating) and np.isnan(sim).any():
        raise ValueError(f"{name} contains NaN at {int(np.isnan(sim).sum())} position(s)")
    return sim


def _as_index(index: np.ndarray, length: int, bound: int, name: str) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 1 or index.shape[0] != length:
        raise ValueError(f"{name} must be 1-D with {length} entries, got shape {index.shape}")
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {index.dtype}")
    index = index.astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= bound):
        raise ValueError(f"{name} must lie in [0, {bound}), got values from {index.min()} to {index.max()}")
    return index


def _count_better(sim: np.ndarray, threshold: np.ndarray, ties: str, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per row, how many entries beat `threshold[row]` (>= pessimistic, > optimistic), skipping columns whose
    `exclude[column]` equals the row number (a video's own captions)."""
    counts = np.empty(sim.shape[0], dtype=np.int64)
    rows = max(1, _BLOCK_ELEMENTS // sim.shape[1])
    for start in range(0, sim.shape[0], rows):
        block = sim[start : start + rows]
        bar = threshold[start : start + rows, None]
        beats = block >= bar if ties == "pessimistic" else block > bar
        if exclude is not None:
            beats &= exclude[None, :] != np.arange(start, start + block.shape[0])[:, None]
        counts[start : start + rows] = beats.sum(axis=1)
    return counts


def ranks(sim: np.ndarray, targets: np.ndarray | None = None, ties: str = "pessimistic") -> np.ndarray:
    """1-based rank of each query's target item, int64 [n_queries].

    `targets[i]` is the column of query i's target; by default the diagonal (`sim` must then be square).
    """
    _check_ties(ties)
    sim = _as_scores(sim)
    n_queries, n_items = sim.shape
    if targets is None:
        if n_queries != n_items:
            raise ValueError(f"without targets the matrix must be square (target on the diagonal), got {sim.shape}")
        targets = np.arange(n_queries)
    targets = _as_index(targets, n_queries, n_items, "targets")
    target_scores = sim[np.arange(n_queries), targets]
    counts = _count_better(sim, target_scores, ties)
    # Pessimistic: the count includes the target itself (>= itself), which is exactly the "1 +".
    return counts if ties == "pessimistic" else counts + 1


def summarize_ranks(rank: np.ndarray) -> dict:
    """R@1/5/10 in percent, median rank MdR, mean rank MnR and the number of queries n, as plain Python numbers."""
    rank = np.asarray(rank)
    if rank.ndim != 1 or rank.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {rank.shape}")
    metrics: dict = {f"R@{k}": float(100.0 * np.mean(rank <= k)) for k in _RECALL_AT}
    metrics["MdR"] = float(np.median(rank))
    metrics["MnR"] = float(np.mean(rank))
    metrics["n"] = int(rank.size)
    return metrics


def retrieval_metrics(sim: np.ndarray, ties: str = "pessimistic") -> dict:
    """Metrics of a square query-by-item matrix whose ground truth is the diagonal.

    Returns ``{"R@1", "R@5", "R@10"`` (percent), ``"MdR", "MnR"`` (1-based ranks), ``"n"}``.
    Ties: ``"pessimistic"`` (default) ranks the target after every other item with an equal or higher score, so
    a constant matrix gives rank n for every query; ``"optimistic"`` counts only strictly higher scores.
    NaN in `sim` raises ValueError.
    """
    return summarize_ranks(ranks(sim, ties=ties))


def multi_caption_metrics(sim: np.ndarray, caption_video: np.ndarray, ties: str = "pessimistic") -> dict:
    """t2v and v2t metrics when a video may have several captions (the ranks of `multi_caption_ranks`)."""
    t2v, v2t = multi_caption_ranks(sim, caption_video, ties)
    return {"t2v": summarize_ranks(t2v), "v2t": summarize_ranks(v2t)}


def multi_caption_ranks(sim: np.ndarray, caption_video: np.ndarray,
                        ties: str = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """Per-query ranks (t2v [n_captions], v2t [n_videos]) when a video may have several captions.

    `sim` is [n_captions, n_videos]; `caption_video[c]` is the video of caption c. Every video needs at least one
    caption (a video without one cannot be a v2t query; ValueError).

    * t2v: each caption is a query over all videos, its own video the target.
    * v2t: each video is a query over all captions and counts as found at the rank of its best caption, i.e.
      rank = 1 + the number of captions *of other videos* that beat its best-scoring caption (>= pessimistic,
      > optimistic). Its other captions are not competitors: two of its own captions tied at the top do not
      push it down. This is the minimum over its captions of their rank among the other videos' captions.

    With one caption per video and caption i -> video i these are ``ranks(sim)`` (t2v) and ``ranks(sim.T)`` (v2t).
    """
    _check_ties(ties)
    sim = _as_scores(sim)
    n_captions, n_videos = sim.shape
    owner = _as_index(caption_video, n_captions, n_videos, "caption_video")
    captions_per_video = np.bincount(owner, minlength=n_videos)
    if (captions_per_video == 0).any():
        missing = np.flatnonzero(captions_per_video == 0)
        raise ValueError(f"{missing.size} video(s) have no caption (first: {missing[:5].tolist()})")

    t2v = ranks(sim, owner, ties)

    by_video = sim.T  # [n_videos, n_captions]: video v's scores against every caption
    # Best own-caption score per video (every video has one, so the -inf start is always replaced).
    best = np.full(n_videos, -np.inf, dtype=np.float64)
    np.maximum.at(best, owner, sim[np.arange(n_captions), owner])
    beaten_by = _count_better(by_video, best, ties, exclude=owner)
    return t2v, beaten_by + 1


def paired_difference(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 1) -> dict:
    """R@k of two models on the same queries, their difference (a - b, points) and its standard error
    (`paired_hit_difference` on the queries' R@k hits; its keys named "R@k a" and "R@k b")."""
    return paired_hit_difference(np.asarray(ranks_a) <= k, np.asarray(ranks_b) <= k, f"R@{k}")


def paired_hit_difference(hits_a, hits_b, name: str = "accuracy") -> dict:
    """Two models' hit rates on the same items ("<name> a", "<name> b", %), their difference (a - b, points) and
    its standard error.

    The paired standard error comes from the per-item differences of the hit indicators: items both models get
    right or both get wrong add nothing, so it is smaller than `se_independent` (the two rates' binomial errors
    combined as if measured on separate items) whenever the models agree on most items. `a_only` / `b_only`: items
    only one of them gets right (McNemar's discordant pairs)."""
    hit_a, hit_b = np.asarray(hits_a, np.float64), np.asarray(hits_b, np.float64)
    if hit_a.shape != hit_b.shape or hit_a.ndim != 1 or hit_a.size < 2:
        raise ValueError(f"need two 1-D hit arrays over the same >= 2 items, got shapes {hit_a.shape} and "
                         f"{hit_b.shape}")
    n = hit_a.size
    pa, pb = hit_a.mean(), hit_b.mean()
    return {f"{name} a": float(100 * pa), f"{name} b": float(100 * pb), "difference": float(100 * (pa - pb)),
            "se_paired": float(100 * np.std(hit_a - hit_b, ddof=1) / np.sqrt(n)),
            "se_independent": float(100 * np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)),
            "a_only": int(((hit_a == 1) & (hit_b == 0)).sum()), "b_only": int(((hit_a == 0) & (hit_b == 1)).sum()),
            "n": int(n)}


def dual_softmax(sim: np.ndarray, temperature: float = 100.0, axis: int = 0) -> np.ndarray:
    """Dual softmax (DSL) test-time normalisation: ``sim * softmax(temperature * sim, axis)``.

    The softmax runs over the query axis (axis 0 of a query-by-item matrix): an item that many queries score
    highly has its scores shared out among them, which tempers "hub" items. Computed stably (max subtracted per
    slice). This changes the numbers it is applied to, so report its metrics separately from the raw ones.
    """
    sim = _as_scores(sim)
    if not np.isfinite(sim).all():
        raise ValueError("sim must be finite for the dual softmax (inf - inf is undefined)")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    # float64 inside: with temperature 100 the logits of float16/float32 inputs lose too much otherwise.
    scores = sim.astype(np.float64)
    logits = temperature * scores
    logits -= logits.max(axis=axis, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=axis, keepdims=True)
    out_dtype = sim.dtype if np.issubdtype(sim.dtype, np.floating) else np.float64
    return (scores * weights).astype(out_dtype, copy=False)


def format_metrics(metrics: Mapping) -> str:
    """One compact line: ``R@1 43.2 R@5 70.1 R@10 80.3 MdR 2.0 MnR 15.6 (n=1000)``.

    A ``{"t2v": ..., "v2t": ...}`` result is printed as ``t2v: ... | v2t: ...``.
    """
    if "t2v" in metrics or "v2t" in metrics:
        return " | ".join(f"{direction}: {format_metrics(metrics[direction])}"
                          for direction in ("t2v", "v2t") if direction in metrics)
    parts = [f"{key} {metrics[key]:.1f}" for key in ("R@1", "R@5", "R@10", "MdR", "MnR") if key in metrics]
    if "n" in metrics:
        parts.append(f"(n={metrics['n']})")
    return " ".join(parts)
