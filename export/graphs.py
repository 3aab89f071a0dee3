"""The three graphs, cut along the model's own API: thin wrappers around `encode_video`, `encode_text` and
`score`, exported with the dynamo exporter (opset 18+), with dynamic batch axes.

No model math lives here: the wrappers only turn dicts into the positional tuples that ONNX graphs need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hbci.model import HBCI, text_pack_names, video_pack_names
from hbci.runtime.bundle import (BCI_SCORER, GLOBAL_OUTPUTS, GRAPHS, SCORES, TEXT_ENCODER, TEXT_INPUTS, VIDEO_ENCODER,
                                 VIDEO_INPUTS)

__all__ = ["GRAPHS", "OPSET", "VideoEncoderGraph", "TextEncoderGraph", "ScorerGraph", "export_graph",
           "example_inputs", "graph_module", "graph_outputs", "scorer_input_names", "scorer_output_names"]

OPSET = 18
# Query-independent global embeddings serve the coarse search stage; the scorer never needs them.
_NOT_SCORER_INPUTS = set(GLOBAL_OUTPUTS.values())


def scorer_input_names(model: HBCI) -> tuple[list[str], list[str]]:
    text = [n for n in text_pack_names(model.config) if n not in _NOT_SCORER_INPUTS]
    video = [n for n in video_pack_names(model.config) if n not in _NOT_SCORER_INPUTS]
    return text, video


def scorer_output_names(model: HBCI) -> list[str]:
    levels = model.config.levels
    return [SCORES] + ([f"{SCORES}_level_{lv}" for lv in levels] if len(levels) > 1 else [])


class VideoEncoderGraph(nn.Module):
    def __init__(self, model: HBCI):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor):
        return tuple(self.model.encode_video(frames, frame_mask).values())


class TextEncoderGraph(nn.Module):
    def __init__(self, model: HBCI):
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor, token_mask: torch.Tensor):
        return tuple(self.model.encode_text(token_ids, token_mask).values())


class ScorerGraph(nn.Module):
    def __init__(self, model: HBCI):
        super().__init__()
        self.model = model
        self.text_names, self.video_names = scorer_input_names(model)

    def forward(self, *tensors: torch.Tensor):
        n = len(self.text_names)
        text = dict(zip(self.text_names, tensors[:n]))
        video = dict(zip(self.video_names, tensors[n:]))
        levels = self.model.score_levels(text, video)
        fused = self.model.fuse(levels)
        return (fused,) + (tuple(levels[lv] for lv in sorted(levels)) if len(levels) > 1 else ())


def example_inputs(model: HBCI, batch: int = 2, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Deterministic example inputs of every graph (also the golden inputs of a bundle's self-check)."""
    g = torch.Generator().manual_seed(seed)
    cfg, size = model.config, model.image_size
    frames = torch.randn(batch, cfg.num_frames, 3, size, size, generator=g)
    frame_mask = torch.ones(batch, cfg.num_frames)
    frame_mask[-1, cfg.num_frames // 2:] = 0  # one padded clip, so masking is exercised
    token_ids = torch.randint(1, 49000, (batch, cfg.max_words), generator=g, dtype=torch.int32)
    token_mask = torch.zeros(batch, cfg.max_words)
    for i in range(batch):
        length = min(cfg.max_words, 5 + 3 * i)
        token_ids[i, 0], token_ids[i, length - 1] = 49406, 49407
        token_ids[i, length:] = 0
        token_mask[i, :length] = 1
    with torch.no_grad():
        text = model.encode_text(token_ids, token_mask)
        video = model.encode_video(frames, frame_mask)
    text_names, video_names = scorer_input_names(model)
    scorer = {n: text[n] for n in text_names} | {n: video[n] for n in video_names}
    return {VIDEO_ENCODER: dict(zip(VIDEO_INPUTS, (frames, frame_mask))),
            TEXT_ENCODER: dict(zip(TEXT_INPUTS, (token_ids, token_mask))),
            BCI_SCORER: scorer}


def graph_module(model: HBCI, graph: str) -> tuple[nn.Module, list[str]]:
    """The wrapper module that is exported as `graph`, and its output names."""
    if graph == VIDEO_ENCODER:
        return VideoEncoderGraph(model), video_pack_names(model.config)
    if graph == TEXT_ENCODER:
        return TextEncoderGraph(model), text_pack_names(model.config)
    if graph == BCI_SCORER:
        return ScorerGraph(model), scorer_output_names(model)
    raise ValueError(f"unknown graph {graph!r}; graphs: {', '.join(GRAPHS)}")


def graph_outputs(model: HBCI, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Torch's outputs of one graph for `inputs` (the reference the exported graph is checked against)."""
    wrapper, names = graph_module(model, graph)
    with torch.no_grad():
        values = wrapper(*inputs.values())
    return {n: v.numpy() for n, v in zip(names, values)}


def export_graph(model: HBCI, graph: str, path: str | Path, opset: int = OPSET) -> Path:
    """Export one graph to `path` (FP32), with dynamic batch axes, and check the result with onnx.checker."""
    import onnx

    model = model.eval()
    wrapper, output_names = graph_module(model, graph)
    inputs = example_inputs(model)[graph]
    if graph == BCI_SCORER:
        # Different sizes for the two sides, so the exporter cannot merge the Nt and Nv axes.
        text_names, _ = scorer_input_names(model)
        more = example_inputs(model, batch=3, seed=1)[BCI_SCORER]
        inputs = {n: (v if n in text_names else more[n]) for n, v in inputs.items()}
        nt, nv = torch.export.Dim("num_texts", min=1, max=65536), torch.export.Dim("num_videos", min=1, max=65536)
        # forward(*tensors): the varargs tuple is one argument to the exporter.
        dynamic = (tuple({0: nt if n in text_names else nv} for n in inputs),)
    else:
        batch = torch.export.Dim("batch", min=1, max=65536)
        dynamic = tuple({0: batch} for _ in inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper.eval(), tuple(inputs.values()), str(path), dynamo=True, opset_version=opset,
                          input_names=list(inputs), output_names=output_names, dynamic_shapes=dynamic,
                          external_data=False, verbose=False)
    proto = onnx.load(str(path))
    version = next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))
    if version < 18:
        raise RuntimeError(f"{path}: exported at opset {version}, expected >= 18")
    onnx.checker.check_model(proto)
    return path
