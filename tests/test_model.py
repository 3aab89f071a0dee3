"""The HBCI model: shapes, masks, learning, and that every switch builds and scores."""

import dataclasses

import pytest
import torch

from hbci.config import ModelConfig
from hbci.loss import hbci_loss
from hbci.model import HBCI, text_pack_names, video_pack_names

T, L = 6, 16


def make_model(**overrides) -> HBCI:
    torch.manual_seed(0)
    return HBCI(ModelConfig(num_frames=T, max_words=L, **overrides)).eval()


def inputs(b: int, valid_frames=None, valid_words=None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, T, 3, 32, 32, generator=g)
    fmask = torch.ones(b, T)
    ids = torch.randint(1, 49000, (b, L), generator=g, dtype=torch.int32)
    wmask = torch.zeros(b, L)
    for i in range(b):
        n = valid_words[i] if valid_words else L
        wmask[i, :n] = 1
        ids[i, n - 1] = 49407
        if valid_frames:
            fmask[i, valid_frames[i]:] = 0
    return frames, fmask, ids, wmask


@pytest.fixture(scope="module")
def model():
    return make_model()


def test_pack_shapes_follow_the_graph_names(model):
    frames, fmask, ids, wmask = inputs(3)
    video, text = model.encode_video(frames, fmask), model.encode_text(ids, wmask)
    assert list(video) == video_pack_names(model.config)
    assert list(text) == text_pack_names(model.config)
    d, k = model.embed_dim, model.config.concepts
    assert video["frame_units"].shape == (3, k, T, d // k)
    assert video["segment_units"].shape == (3, k, model.config.num_segments, d // k)
    assert text["word_units"].shape == (3, k, L, d // k)
    assert text["phrase_units"].shape == (3, k, model.config.num_phrases, d // k)
    assert video["video_global"].shape == text["text_global"].shape == (3, d)
    assert model.score(text, model.encode_video(*inputs(5)[:2])).shape == (3, 5)


def test_frame_padding_never_changes_a_score(model):
    frames, fmask, ids, wmask = inputs(4, valid_frames=[T, 3, 1, 4], valid_words=[5, 9, L, 3])
    with torch.no_grad():
        base = model.score(model.encode_text(ids, wmask), model.encode_video(frames, fmask))
        garbage = frames.clone()
        garbage[fmask == 0] = torch.randn_like(garbage[fmask == 0]) * 50
        other_ids = ids.clone()
        other_ids[wmask == 0] = torch.randint(1, 49000, (int((wmask == 0).sum()),), dtype=torch.int32)
        moved = model.score(model.encode_text(other_ids, wmask), model.encode_video(garbage, fmask))
    torch.testing.assert_close(moved, base, rtol=0, atol=1e-5)
    # The padded content is really different and reaches the encoder: the masked score is what ignores it.
    assert not torch.equal(garbage, frames)


def test_scores_are_independent_of_the_batch_they_come_in(model):
    frames, fmask, ids, wmask = inputs(5, valid_frames=[T, 2, 4, 5, 1])
    with torch.no_grad():
        text, video = model.encode_text(ids, wmask), model.encode_video(frames, fmask)
        full = model.score(text, video)
        part = model.score({k: v[1:3] for k, v in text.items()}, {k: v[2:] for k, v in video.items()})
    torch.testing.assert_close(part, full[1:3, 2:], rtol=1e-5, atol=1e-5)


def test_loss_falls_on_a_tiny_batch():
    model = make_model().train()
    frames, fmask, ids, wmask = inputs(8, valid_frames=[T, 5, 4, T, 3, T, 2, T])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss, parts = hbci_loss(model, model.encode_text(ids, wmask), model.encode_video(frames, fmask))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts["total"])
    assert {"nce_1", "nce_2", "nce_3", "nce_fused", "decorrelation", "distill"} <= set(parts)
    assert losses[-1] < 0.5 * losses[0], losses


ABLATIONS = {
    "meanP": dict(temporal_layers=0, video_pooling="mean", levels=(3,), concepts=1,
                  decorrelation_weight=0.0, distill_weight=0.0),
    "seqTransf": dict(video_pooling="mean", levels=(3,), concepts=1, decorrelation_weight=0.0, distill_weight=0.0),
    "xpool": dict(levels=(3,), concepts=1, decorrelation_weight=0.0, distill_weight=0.0),
    "no_bci": dict(bci_iterations=0),
    "finest": dict(fusion="finest"),
    "hbi_distill": dict(distill_stop_grad=False, distill_temperature=1.0, distill_direction="coarse_to_fine"),
    "levels_1_2": dict(levels=(1, 2)),
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_switch_builds_trains_and_scores(name):
    model = make_model(**ABLATIONS[name]).train()
    frames, fmask, ids, wmask = inputs(4, valid_frames=[T, 2, 3, T])
    loss, parts = hbci_loss(model, model.encode_text(ids, wmask), model.encode_video(frames, fmask))
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        sim = model.score(model.encode_text(ids, wmask), model.encode_video(frames, fmask))
    assert sim.shape == (4, 4) and torch.isfinite(sim).all()
    assert sim.abs().max() <= 1.0 + 1e-5  # weighted sums of cosines


def test_mean_pooling_model_has_no_interaction_modules():
    model = make_model(**ABLATIONS["meanP"])
    assert model.temporal is None
    assert list(model.levels) == ["3"]
    assert not hasattr(model, "segment_pool")


def test_concepts_must_divide_the_width():
    with pytest.raises(ValueError, match="divisible"):
        make_model(concepts=7)


def test_config_is_frozen():
    cfg = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.concepts = 2


def test_temporal_transformer_learns_the_order_of_frames_with_clip_sized_norms():
    """Forward and reversed sequences hold the same frames, so only frame order tells them apart. Frame features
    have norms near 17, like CLIP's projected features: the transformer must still see the positions (a position
    embedding 1% of the input, as before the fix, left this at chance)."""
    from hbci.layers import TemporalTransformer

    torch.manual_seed(0)
    width, frames = 32, 6
    temporal = TemporalTransformer(width, layers=1, heads=4, num_frames=frames)
    head = torch.nn.Linear(width, 1)
    direction = torch.nn.functional.normalize(torch.randn(width), dim=0)
    steps = torch.linspace(-1, 1, frames)[None, :, None]

    def batch(n):
        content = 3 * torch.randn(n, 1, width)                 # |content| ~ 17
        forward = torch.rand(n) < 0.5
        sign = torch.where(forward, 1.0, -1.0)[:, None, None]
        x = content + 2 * sign * steps * direction              # same set of frames either way
        return x, forward.float()

    optimizer = torch.optim.Adam([*temporal.parameters(), *head.parameters()], lr=3e-3)
    mask = torch.ones(64, frames)
    for _ in range(150):
        x, y = batch(64)
        logits = head(temporal(x, mask).mean(1)).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = batch(512)
    with torch.no_grad():
        accuracy = ((head(temporal(x, torch.ones(512, frames)).mean(1)).squeeze(1) > 0).float() == y).float().mean()
        assert torch.allclose(x.mean(1), x.flip(1).mean(1), atol=1e-5)  # mean pooling alone sees no order
    assert accuracy > 0.9, f"order accuracy {accuracy:.2f}"


def test_paired_similarities_are_the_diagonal_of_all_pairs():
    from hbci.config import ModelConfig
    from hbci.model import HBCI

    torch.manual_seed(0)
    for pooling in ("text_guided", "mean"):
        model = HBCI(ModelConfig(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2,
                                 concepts=4, video_pooling=pooling)).eval()
        frames, mask = torch.randn(3, 4, 3, 32, 32), torch.ones(3, 4)
        mask[1, 3] = 0
        ids = torch.randint(1, 1000, (3, 16)).int()
        words = torch.ones(3, 16)
        words[:, 10:] = 0
        with torch.no_grad():
            text, video = model.encode_text(ids, words), model.encode_video(frames, mask)
            full, paired = model.level_similarities(text, video), model.level_similarities(text, video, paired=True)
        assert full.keys() == paired.keys()
        for level in full:
            torch.testing.assert_close(paired[level], full[level].diagonal(), rtol=1e-5, atol=1e-6)


def _two_events(first: int, frames: int = 12) -> torch.Tensor:
    """Features [1, T, 2] of two events (a ramp in one feature each, over half the clip), `first` ramping first."""
    t = torch.arange(frames, dtype=torch.float32)
    half = frames // 2
    early, late = (t / (half - 1)).clamp(max=1), ((t - half) / (half - 1)).clamp(min=0)
    pair = [early, late] if first == 0 else [late, early]
    return torch.stack(pair, -1)[None]


def test_time_curvature_is_the_second_legendre_coefficient():
    from hbci.layers import time_curvature

    x = torch.randn(2, 7, 3)
    mask = torch.tensor([[1.0] * 7, [1, 1, 1, 1, 1, 0, 0]])
    for b, n in ((0, 7), (1, 5)):
        u = torch.linspace(-1, 1, n)
        c = (3 * u * u - 1) / 2
        c = c - c.mean()
        naive = (c[:, None] * x[b, :n]).sum(0) / c.abs().sum()
        torch.testing.assert_close(time_curvature(x, mask)[b], naive)
    # Padding never counts; one or two frames, and a constant rate of change, have no curvature.
    torch.testing.assert_close(time_curvature(x[1:, :5], mask[1:, :5]), time_curvature(x[1:], mask[1:]))
    for n in (1, 2):
        torch.testing.assert_close(time_curvature(x[:, :n], mask[:, :n]), torch.zeros(2, 3))
    ramp = 3.0 * torch.arange(9.0)[None, :, None] + 1.0
    assert float(time_curvature(ramp, torch.ones(1, 9)).abs().max()) < 1e-5
    # Two events in the other order: the curvature flips its sign.
    ones = torch.ones(1, 12)
    torch.testing.assert_close(time_curvature(_two_events(0), ones), -time_curvature(_two_events(1), ones))
    assert float(time_curvature(_two_events(0), ones).abs().min()) > 0.1


def test_the_curvature_path_makes_event_order_visible_from_the_start():
    """A fresh temporal transformer adds only its paths to the frames (its projection starts at zero), so this is
    exact: what it adds moves only a little when two events swap order without the curvature, a lot with it."""
    from hbci.layers import TemporalTransformer

    mask = torch.ones(1, 12)
    gaps = {}
    for curvature in (False, True):
        torch.manual_seed(0)
        temporal = TemporalTransformer(4, layers=1, heads=1, num_frames=12, trend=True, curvature=curvature)
        added = []
        for first in (0, 1):
            frames = torch.cat([_two_events(first), torch.zeros(1, 12, 2)], -1)
            with torch.no_grad():
                added.append(temporal(frames, mask) - frames)
        gaps[curvature] = float((added[0] - added[1]).norm())
    assert gaps[True] > 2 * gaps[False] > 0


def test_the_trend_path_makes_order_visible_from_the_start():
    """time_trend against a naive weighted sum; with temporal_trend a fresh model already scores a clip and its
    reversal differently (without it, a fresh model cannot: the transformer's path starts as the identity)."""
    from hbci.layers import time_trend

    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for b, n in ((0, 5), (1, 3)):
        c = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        naive = (c[:, None] * x[b, :n]).sum(0) / c.abs().sum()
        torch.testing.assert_close(time_trend(x, mask)[b], naive)
    torch.testing.assert_close(time_trend(x[:, :1], mask[:, :1]), torch.zeros(2, 3))
    frames, frame_mask = torch.randn(2, 4, 3, 32, 32), torch.ones(2, 4)
    ids, words = torch.randint(1, 1000, (2, 16)).int(), torch.ones(2, 16)
    for trend, differs in ((False, False), (True, True)):
        torch.manual_seed(0)
        model = HBCI(ModelConfig(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2,
                                 concepts=4, temporal_trend=trend)).eval()
        with torch.no_grad():
            text = model.encode_text(ids, words)
            forward = model.score(text, model.encode_video(frames, frame_mask))
            backward = model.score(text, model.encode_video(frames.flip(1), frame_mask))
        assert bool((forward - backward).abs().max() > 1e-4) == differs


@pytest.mark.parametrize("a_shape, b_shape", [
    ((5, 1, 3, 1, 8), (1, 4, 3, 8, 6)),   # every text against every video (all pairs)
    ((5, 4, 3, 1, 8), (5, 1, 3, 8, 7)),   # per-pair summaries against each text's own units
    ((5, 1, 3, 1, 8), (5, 1, 3, 8, 6)),   # paired
    ((2, 8), (8, 3)),
])
def test_broadcast_matmul_equals_matmul_with_its_gradients(a_shape, b_shape):
    from hbci.layers import broadcast_matmul

    torch.manual_seed(0)
    a1, b1 = torch.randn(a_shape, requires_grad=True), torch.randn(b_shape, requires_grad=True)
    a2, b2 = a1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    out = broadcast_matmul(a1, b1)
    ref = a2 @ b2
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn(ref.shape)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-5, atol=1e-5)
