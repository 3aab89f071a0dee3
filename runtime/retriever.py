"""The runtime's Python API: load a bundle, encode texts and videos, score them. No torch.

    r = Retriever.load("bundle/", backend="auto", precision="fp32")
    texts = r.encode_text(["a red circle moves left"])
    videos = r.encode_video("clip.mp4")            # or frames uint8 [T, H, W, 3] / [B, T, H, W, 3]
    scores = r.score(texts, videos)                # ndarray [Nt, Nv]

The retriever only feeds graphs: all model math is inside the bundle's graphs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hbci.runtime.backends import Backend, create_backend
from hbci.runtime.bundle import (BCI_SCORER, GRAPHS, SCORES, TEXT_ENCODER, TEXT_INPUTS, VIDEO_ENCODER, VIDEO_INPUTS,
                                 Bundle, load_bundle, relative_error)
from hbci.runtime.bundle import PRECISIONS as BUNDLE_PRECISIONS
from hbci.runtime.errors import BundleError, QueryError
from hbci.runtime.tokenizer import ClipTokenizer
from hbci.runtime.video import load_clip, preprocess

__all__ = ["Retriever", "Pack", "concat_packs", "MAX_QUERY_CHARS", "PRECISIONS", "choose_precision"]

log = logging.getLogger("hbci")

Pack = dict[str, np.ndarray]
# A query longer than this is certainly not a sentence; it is refused rather than silently truncated to L tokens
# after expensive cleaning.
MAX_QUERY_CHARS = 2000
PRECISIONS = ("auto", *BUNDLE_PRECISIONS)  # what Retriever.load accepts


def concat_packs(packs: list[Pack]) -> Pack:
    """Packs of the same kind (text or video) as one, in order."""
    return {k: np.concatenate([p[k] for p in packs]) for k in packs[0]}


def choose_precision(available: list[str], backend: str = "auto") -> str:
    """The precision "auto" means: FP16 where a GPU back end exists, else FP32 (ONNX Runtime on a CPU runs FP32
    faster than FP16: most FP16 kernels are emulated with casts), else whatever the bundle has."""
    gpu = False
    if backend != "onnxruntime-cpu":
        import onnxruntime

        gpu = bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers()))
    order = ("fp16", "fp32", "int8") if gpu else ("fp32", "fp16", "int8")
    return next((p for p in order if p in available), available[0])


class Retriever:
    def __init__(self, bundle: Bundle, backends: dict[str, Backend], precision: str):
        self.bundle, self.backends, self.precision = bundle, backends, precision
        self.tokenizer = ClipTokenizer.from_file(bundle.tokenizer_path, bundle.max_words)
        # Calls never exceed the engines' optimisation profiles; the scorer's video chunk also bounds the
        # [Nt, Nv, ...] intermediates on large galleries.
        manifest = bundle.manifest
        self.video_chunk = manifest.max_batch(VIDEO_ENCODER, "batch")
        self.text_chunk = manifest.max_batch(TEXT_ENCODER, "batch")
        self.score_text_chunk = manifest.max_batch(BCI_SCORER, "num_texts")
        self.score_chunk = manifest.max_batch(BCI_SCORER, "num_videos")

    @classmethod
    def load(cls, bundle_dir: str | Path, backend: str = "auto", precision: str = "fp32", threads: int = 0,
             self_check: bool = True) -> "Retriever":
        """Load and verify a bundle, create the three graph back ends and run the golden self-check.

        precision: "fp32", "fp16", "int8", or "auto" (`choose_precision`). If the chosen back end fails the
        self-check, the retriever falls back to ONNX Runtime on the CPU (and says so); if that fails too, the
        bundle is refused.
        """
        bundle = load_bundle(bundle_dir)
        if precision == "auto":
            precision = choose_precision(bundle.precisions, backend)
        if precision not in bundle.precisions:
            raise BundleError(f"{bundle.root}: no {precision} graphs (has: {', '.join(bundle.precisions)})")
        # FP16 graphs run at the basic optimisation level: ORT's fused FP16 kernels on CPU have crashed on ViTs.
        optimization = "basic" if precision == "fp16" else "all"

        def build(kind: str) -> dict[str, Backend]:
            return {g: create_backend(kind, bundle.graph_path(g, precision), bundle.engine_path(g, precision),
                                      threads, optimization)
                    for g in GRAPHS}

        retriever = cls(bundle, build(backend), precision)
        if self_check:
            problem = retriever.self_check()
            if problem and backend != "onnxruntime-cpu":
                log.warning("back end %s failed the self-check (%s); falling back to onnxruntime on the CPU",
                            retriever.backend_name, problem)
                retriever = cls(bundle, build("onnxruntime-cpu"), precision)
                problem = retriever.self_check()
            if problem:
                raise BundleError(f"{bundle.root}: {precision} graphs fail the self-check: {problem}")
        log.info("hbci: bundle %s (%s), back end %s", bundle.bundle_id, precision, retriever.backend_name)
        return retriever

    @property
    def backend_name(self) -> str:
        return self.backends[VIDEO_ENCODER].name

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    def self_check(self) -> str | None:
        """Run every graph on the bundle's golden inputs; return what failed, or None.

        Each output is held to its own relative tolerance recorded in the manifest (`Manifest.output_check`;
        bundles without recorded tolerances: the precision's absolute one). Guards against back-end settings that
        run but compute garbage (for example every embedding equal).
        """
        manifest = self.bundle.manifest
        golden = self.bundle.golden()
        for graph in GRAPHS:
            try:
                outputs = self.backends[graph].run(golden.inputs[graph])
            except Exception as exc:  # any back-end failure is a failed check, reported with its cause
                return f"{graph} raised {type(exc).__name__}: {exc}"
            for name, value in outputs.items():
                expected = golden.outputs[graph].get(name)
                if expected is None:
                    continue
                tolerance, relative = manifest.output_check(self.precision, graph, name)
                if relative:
                    error = relative_error(value, expected)
                else:
                    error = float(np.abs(value - expected).max()) if value.shape == expected.shape else float("inf")
                if not error <= tolerance:
                    kind = "relative error" if relative else "max abs difference"
                    return (f"{graph} output {name} differs from the golden output: {kind} {error:.3g} "
                            f"(> {tolerance:g})")
        return None

    def golden_errors(self) -> dict[str, dict[str, float]]:
        """{graph: {output: relative error}} of this retriever's graphs on the golden inputs (`relative_error`):
        what export records tolerances from."""
        golden = self.bundle.golden()
        errors: dict[str, dict[str, float]] = {}
        for graph in GRAPHS:
            outputs = self.backends[graph].run(golden.inputs[graph])
            errors[graph] = {name: relative_error(value, golden.outputs[graph][name])
                             for name, value in outputs.items() if name in golden.outputs[graph]}
        return errors

    # ------------------------------------------------------------------------------------------------ text
    def tokenize(self, texts: list[str]) -> np.ndarray:
        """int32 token ids [N, L], padded to the bundle's fixed length."""
        return self._tokenize(texts)[0]

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not texts:
            raise QueryError("give at least one query text")
        for text in texts:
            if not isinstance(text, str):
                raise QueryError(f"a query must be text, got {type(text).__name__}")
            if not text.strip():
                raise QueryError("a query is empty")
            if len(text) > MAX_QUERY_CHARS:
                raise QueryError(f"a query is {len(text)} characters long (limit {MAX_QUERY_CHARS}); "
                                 f"the model reads at most {self.bundle.max_words} tokens")
        return self.tokenizer(list(texts))

    def encode_text(self, texts: list[str]) -> Pack:
        ids, mask = self._tokenize(texts)
        # Always the bundle's fixed L: variable shapes make ONNX Runtime grow its memory arena.
        encoder = self.backends[TEXT_ENCODER]
        ids_name, mask_name = TEXT_INPUTS
        return concat_packs([encoder.run({ids_name: ids[i:i + self.text_chunk],
                                     mask_name: mask[i:i + self.text_chunk].astype(np.float32)})
                        for i in range(0, len(ids), self.text_chunk)])

    # ------------------------------------------------------------------------------------------------ video
    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames [N, H, W, 3] -> float32 [N, 3, S, S], exactly as training saw them: frames of any size
        are resized and centre-cropped, frames already S x S are used as they are (cropped once, by the caller)."""
        try:
            return preprocess(frames, self.bundle.image_size, self.bundle.mean, self.bundle.std)
        except ValueError as exc:
            raise QueryError(str(exc)) from None

    def load_video(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """T uniformly sampled, resized and cropped uint8 frames [T, S, S, 3] and their mask [T]."""
        return load_clip(path, self.bundle.num_frames, self.bundle.image_size)

    def encode_video(self, video, mask: np.ndarray | None = None) -> Pack:
        """A path, a list of paths, or uint8 RGB frames [T, H, W, 3] / [B, T, H, W, 3] (T = the bundle's T) of any
        size; S x S frames (already resized and centre-cropped, as the monitor and `load_video` give them) are
        not resized again."""
        t = self.bundle.num_frames
        if isinstance(video, (str, Path)):
            video = [video]
        if isinstance(video, (list, tuple)) and video and isinstance(video[0], (str, Path)):
            clips = [self.load_video(p) for p in video]
            video = np.stack([c[0] for c in clips])
            mask = np.stack([c[1] for c in clips])
        video = np.asarray(video)
        if video.ndim == 4:
            video = video[None]
            mask = None if mask is None else np.asarray(mask)[None]
        if video.ndim != 5 or video.shape[1] != t or video.shape[-1] != 3:
            raise QueryError(f"frames must be uint8 [B, {t}, H, W, 3] (RGB), got shape {video.shape}")
        mask = np.ones(video.shape[:2], bool) if mask is None else np.asarray(mask, bool)
        packs = []
        for start in range(0, len(video), self.video_chunk):
            clip = video[start:start + self.video_chunk]
            b = len(clip)
            pixels = self.preprocess(clip.reshape(b * t, *clip.shape[2:]))
            pixels = pixels.reshape(b, t, *pixels.shape[1:])
            packs.append(self.backends[VIDEO_ENCODER].run(
                dict(zip(VIDEO_INPUTS, (pixels, mask[start:start + b].astype(np.float32))))))
        return concat_packs(packs)

    # ------------------------------------------------------------------------------------------------ score
    def score(self, text: Pack, video: Pack, levels: bool = False):
        """Fused scores [Nt, Nv] (and per-level scores {name: [Nt, Nv]} when levels=True), scored in chunks of
        videos so memory stays bounded on large galleries."""
        scorer = self.backends[BCI_SCORER]
        nt, nv = len(next(iter(text.values()))), len(next(iter(video.values())))
        rows: dict[str, list[np.ndarray]] = {}
        for t0 in range(0, nt, self.score_text_chunk):
            text_part = {k: v[t0:t0 + self.score_text_chunk] for k, v in text.items()}
            row: dict[str, list[np.ndarray]] = {}
            for v0 in range(0, nv, self.score_chunk):
                feeds = text_part | {k: v[v0:v0 + self.score_chunk] for k, v in video.items()}
                for name, value in scorer.run(feeds).items():
                    row.setdefault(name, []).append(value)
            for name, chunks in row.items():
                rows.setdefault(name, []).append(np.concatenate(chunks, axis=1))
        result = {name: np.concatenate(parts, axis=0) for name, parts in rows.items()}
        return (result[SCORES], result) if levels else result[SCORES]
