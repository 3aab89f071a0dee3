"""Losses: InfoNCE, concept decorrelation and cross-level distillation."""

import math

import pytest

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


def test_frame_orders_against_a_naive_reordering():
    from hbci.loss import reorder, reversed_order, swapped_order

    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.float32)
    feats = torch.arange(10, dtype=torch.float32).view(2, 5, 1)
    assert reorder(feats, reversed_order(mask))[..., 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    cut = torch.tensor([2, 1])
    assert reorder(feats, swapped_order(mask, cut))[..., 0].tolist() == [[2, 3, 4, 0, 1], [6, 7, 5, 8, 9]]
    assert reorder(feats, swapped_order(mask, torch.tensor([0, 0])))[..., 0].tolist() == feats[..., 0].tolist()


def test_temporal_negative_loss_is_the_two_way_cross_entropy_of_valid_rows():
    from hbci.loss import temporal_negative_loss

    pos, neg = torch.tensor([0.8, 0.2, 0.5]), torch.tensor([0.2, 0.8, 0.5])
    scale = torch.tensor(10.0)
    valid = torch.tensor([1.0, 0.0, 1.0])
    expected = (math.log1p(math.exp(-6.0)) + math.log(2)) / 2
    assert temporal_negative_loss(pos, neg, valid, scale).item() == pytest.approx(expected, rel=1e-6)
    assert temporal_negative_loss(pos, neg, torch.zeros(3), scale).item() == 0.0


def test_temporal_negative_margin_keeps_pushing_a_negative_that_already_scores_below():
    from hbci.loss import temporal_negative_loss

    pos, scale, valid = torch.tensor([0.80]), torch.tensor(20.0), torch.ones(1)
    neg = torch.tensor([0.75], requires_grad=True)  # already below its positive, by less than the margin
    plain = temporal_negative_loss(pos, neg, valid, scale)
    with_margin = temporal_negative_loss(pos, neg, valid, scale, margin=0.2)
    assert with_margin.item() == pytest.approx(math.log1p(math.exp(20.0 * (0.75 + 0.2 - 0.80))), rel=1e-6)
    assert with_margin.item() > 2 * plain.item()
    with_margin.backward()
    push_with_margin = neg.grad.item()
    neg.grad = None
    plain.backward()
    assert push_with_margin > 3 * neg.grad.item() > 0  # the gradient lowering the negative is several times larger


def _tiny(**changes):
    from hbci.config import ModelConfig
    from hbci.model import HBCI

    torch.manual_seed(0)
    base = dict(num_frames=4, max_words=16, temporal_layers=1, num_segments=2, num_phrases=2, concepts=4)
    return HBCI(ModelConfig(**{**base, **changes}))


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40000, (4, 16), generator=g).int()
    ids[:, 0], ids[:, 9] = 49406, 49407
    word_mask = (torch.arange(16)[None] <= 9).float().expand(4, -1)
    return ids, word_mask, torch.randn(4, 4, 3, 32, 32, generator=g), torch.ones(4, 4)


def test_an_order_blind_model_scores_a_clip_and_its_reversal_alike():
    """Mean pooling (and HBCI at init: its temporal transformer starts as the identity) scores a window and its
    reversal alike, so the temporal term is log 2 exactly; its gradient reaches the temporal transformer."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    reverse, cut = torch.tensor([True, True, False, True]), torch.tensor([2, 0, 0, 2])
    blind = _tiny(temporal_layers=0, video_pooling="mean", levels=(3,), concepts=1, temporal_negative_weight=1.0)
    _, parts = batch_loss(blind, ids, word_mask, frames, mask, reverse=reverse, cut=cut)
    assert parts["temporal"] == pytest.approx(math.log(2), abs=1e-6)
    grads = {}
    for weight in (0.0, 1.0):
        model = _tiny(temporal_negative_weight=weight)
        loss, parts = batch_loss(model, ids, word_mask, frames, mask, reverse=reverse, cut=cut)
        assert ("temporal" in parts) == (weight > 0)
        loss.backward()
        grads[weight] = model.temporal.proj.weight.grad.clone()
    assert parts["temporal"] == pytest.approx(math.log(2), abs=1e-6)
    assert (grads[1.0] - grads[0.0]).abs().max() > 1e-6  # the term pushes frame order into the features


def test_a_swapped_caption_is_a_negative_for_its_window():
    """The caption side: a 'swapped' caption identical to the caption scores the same, so its term is log 2 exactly;
    a different one moves the loss and sends a gradient into the text encoder; rows marked invalid count for
    nothing."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    flags = dict(reverse=torch.zeros(4, dtype=torch.bool), cut=torch.zeros(4, dtype=torch.long))
    model = _tiny(temporal_negative_weight=1.0)
    _, same = batch_loss(model, ids, word_mask, frames, mask, swapped_captions=(ids, word_mask, torch.ones(4)), **flags)
    assert same["temporal_caption"] == pytest.approx(math.log(2), abs=1e-6)

    other = ids.clone()
    other[:, 1:9] = other[:, 1:9].flip(1)  # the same words in another order
    text_param = model.clip.transformer.resblocks[0].attn.in_proj_weight
    grads = []
    for valid in (torch.zeros(4), torch.tensor([1.0, 0.0, 1.0, 1.0])):
        model.zero_grad()
        loss, parts = batch_loss(model, ids, word_mask, frames, mask, swapped_captions=(other, word_mask, valid),
                                 **flags)
        loss.backward()
        grads.append(text_param.grad.clone())
        if not valid.any():
            assert parts["temporal"] == 0.0 and parts["temporal_caption"] == 0.0
    assert parts["temporal_caption"] != pytest.approx(math.log(2), abs=1e-4)
    assert (grads[1] - grads[0]).abs().max() > 1e-6


def test_each_margin_shapes_only_its_own_side_of_the_temporal_negatives():
    """A negative that scores exactly as its positive gives log 2 without a margin and softplus(scale * margin) with
    one: the caption margin moves the swapped-caption term alone, the temporal margin the video-side terms alone."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    flags = dict(reverse=torch.ones(4, dtype=torch.bool), cut=torch.zeros(4, dtype=torch.long),
                 swapped_captions=(ids, word_mask, torch.ones(4)))  # the caption itself: scores as its positive
    blind = dict(temporal_layers=0, video_pooling="mean", levels=(3,), concepts=1, temporal_negative_weight=1.0,
                 swapped_caption_negatives=True)  # order-blind: the reversed window scores as the window
    scale = 1 / 0.07  # logit_scale at init
    for video_margin, caption_margin in ((0.0, 0.0), (0.0, 0.2), (0.1, 0.0)):
        model = _tiny(**blind, temporal_negative_margin=video_margin, caption_negative_margin=caption_margin)
        _, parts = batch_loss(model, ids, word_mask, frames, mask, **flags)
        assert parts["temporal_reverse"] == pytest.approx(math.log1p(math.exp(scale * video_margin)), rel=1e-4)
        assert parts["temporal_caption"] == pytest.approx(math.log1p(math.exp(scale * caption_margin)), rel=1e-4)


def test_a_rendered_order_swap_is_a_negative_for_its_window():
    """The rendered order negative: frames identical to the window's own score the same, so its term is log 2
    exactly; other frames move the loss and send a gradient into the image tower (their features are computed);
    with no rows it counts for nothing."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    flags = dict(reverse=torch.zeros(4, dtype=torch.bool), cut=torch.zeros(4, dtype=torch.long))
    model = _tiny(temporal_negative_weight=1.0)
    rows = torch.tensor([0, 2, 3])
    _, same = batch_loss(model, ids, word_mask, frames, mask, rendered=(frames[rows], rows), **flags)
    assert same["temporal_rendered"] == pytest.approx(math.log(2), abs=1e-6)

    # Other pixels (a rendered swap shows other frames, not a reordering; HBCI at init is order-blind)
    other = torch.randn(frames[rows].shape, generator=torch.Generator().manual_seed(5))
    image_param = model.clip.visual.conv1.weight
    grads = []
    for chosen, shown in ((rows[:0], other[:0]), (rows, other)):
        model.zero_grad()
        loss, parts = batch_loss(model, ids, word_mask, frames, mask, rendered=(shown, chosen), **flags)
        loss.backward()
        grads.append(image_param.grad.clone())
        if not len(chosen):
            assert parts["temporal"] == 0.0 and parts["temporal_rendered"] == 0.0
    assert parts["temporal_rendered"] != pytest.approx(math.log(2), abs=1e-4)
    assert (grads[1] - grads[0]).abs().max() > 1e-6


def test_a_partial_window_is_a_negative_spliced_from_the_batch_features():
    """The partial negative gathers the batch's frame features by flat index: the identity splice scores as the
    window itself (log 2 exactly); a splice with another window's frames moves the term; no valid row, nothing."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    b, t = mask.shape
    flags = dict(reverse=torch.zeros(b, dtype=torch.bool), cut=torch.zeros(b, dtype=torch.long))
    model = _tiny(temporal_negative_weight=1.0)
    identity = torch.arange(b * t).reshape(b, t)
    _, same = batch_loss(model, ids, word_mask, frames, mask, partial=(identity, torch.ones(b, dtype=torch.bool)),
                         **flags)
    assert same["temporal_partial"] == pytest.approx(math.log(2), abs=1e-6)
    spliced = identity.clone()
    spliced[0, t // 2:] = identity[1, : t - t // 2]  # row 0's first half, then row 1's first frames
    _, none = batch_loss(model, ids, word_mask, frames, mask, partial=(spliced, torch.zeros(b, dtype=torch.bool)),
                         **flags)
    assert none["temporal"] == 0.0 and none["temporal_partial"] == 0.0
    _, moved = batch_loss(model, ids, word_mask, frames, mask, partial=(spliced, torch.arange(b) == 0), **flags)
    assert moved["temporal_partial"] != pytest.approx(math.log(2), abs=1e-4)


def test_full_hbci_with_mean_pooled_videos_trains():
    """Level 3 with mean pooling has video concepts that do not depend on the text ([1, Nv, K, d]): the concept
    decorrelation must still pair each text with its own video (it failed on the broadcast axis)."""
    from hbci.train import batch_loss

    ids, word_mask, frames, mask = _batch()
    model = _tiny(video_pooling="mean", temporal_negative_weight=1.0)
    loss, parts = batch_loss(model, ids, word_mask, frames, mask, reverse=torch.ones(4, dtype=torch.bool),
                             cut=torch.zeros(4, dtype=torch.long))
    assert torch.isfinite(loss) and parts["decorrelation"] > 0
    loss.backward()
