"""The model bundle format, owned here: the typed manifest, the graph names, the file layout per precision, the
golden self-check data and its keys, tolerances, engine profiles and the calibrated alert thresholds. No torch.

A bundle is one folder: ONNX graphs per precision (`fp32/`, `fp16/`, `int8/`), `tokenizer.json`, `golden.npz`,
optional TensorRT engines in `engines/`, an optional background gallery (`gallery.npz`, `hbci.runtime.gallery`),
and `manifest.json`. `hbci.export.bundle` and `hbci.calibration.gate`
write bundles through `write_manifest`; everything else reads them through `load_bundle`.

The bundle id names the model, not the files derived from it: a hash of the graphs that define the model
(`model_graphs`: the FP32 graphs export writes, kept when a shipped copy drops them), the tokenizer, the
preprocessing (T, L, image size, mean, std) and the model config (`model_id`). Adding FP16 or INT8 graphs or
TensorRT engines or a gallery leaves it unchanged, so indexes and events stay valid; retraining or re-exporting changes it.
The manifest's own integrity is a separate hash of all of its content (`manifest_sha256`).

Verification refuses, with the file named: an unknown format version, a manifest edited after it was written
(`manifest_sha256` or the bundle id no longer match), an unknown or mistyped manifest key, and any file whose
sha256 differs from the manifest's. Format version 2 (version 1 hashed the whole manifest into the bundle id;
`upgrade_manifest` rewrites a version-1 bundle); a later version adds optional fields with defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hbci.runtime.errors import BundleError, ConfigError

__all__ = ["FORMAT_VERSION", "MANIFEST", "GRAPHS", "VIDEO_ENCODER", "TEXT_ENCODER", "BCI_SCORER", "PRECISIONS",
           "VIDEO_INPUTS", "TEXT_INPUTS", "GLOBAL_OUTPUTS", "SCORES",
           "TOKENIZER_FILE", "GOLDEN_FILE", "ENGINE_DIR", "PROFILES", "GOLDEN_TOLERANCE", "graph_file",
           "graph_files", "engine_file", "timing_cache_file", "golden_key", "parse_golden_key", "Golden",
           "Thresholds", "ScoreStats", "ScorerInputs", "Validation", "Shipped", "GalleryInfo", "Manifest", "Bundle", "load_bundle",
           "write_manifest", "sha256_file", "model_id", "manifest_sha256", "upgrade_manifest", "atomic_write_bytes",
           "score_statistics", "default_thresholds", "resolve_thresholds", "TOLERANCE_MARGIN", "MIN_RELATIVE_TOLERANCE",
           "relative_error", "output_tolerances"]

FORMAT_VERSION = 2
MANIFEST = "manifest.json"

VIDEO_ENCODER, TEXT_ENCODER, BCI_SCORER = "video_encoder", "text_encoder", "bci_scorer"
GRAPHS = (VIDEO_ENCODER, TEXT_ENCODER, BCI_SCORER)
PRECISIONS = ("fp32", "fp16", "int8")
# The graph inputs, and the outputs read by name (the other outputs are packs passed on as they are).
VIDEO_INPUTS = ("frames", "frame_mask")  # float32 [B, T, 3, S, S] (normalised), float32 [B, T]
TEXT_INPUTS = ("token_ids", "token_mask")  # int32 [B, L], float32 [B, L]
GLOBAL_OUTPUTS = {VIDEO_ENCODER: "video_global", TEXT_ENCODER: "text_global"}  # [B, D]: the coarse search stage
SCORES = "scores"  # the scorer's fused scores [Nt, Nv]
# INT8 quantizes the encoders (the video encoder for speed, the text encoder for memory); the scorer is the FP32
# file. A bundle whose text encoder could not be calibrated names the FP32 file in its manifest instead.
_QUANTIZED_GRAPHS = {"int8": (VIDEO_ENCODER, TEXT_ENCODER)}
TOKENIZER_FILE, GOLDEN_FILE, ENGINE_DIR = "tokenizer.json", "golden.npz", "engines"

# (min, opt, max) of each dynamic axis: TensorRT optimisation profiles, and the runtime's chunk sizes (it never
# exceeds max).
PROFILES = {
    VIDEO_ENCODER: {"batch": (1, 8, 32)},
    TEXT_ENCODER: {"batch": (1, 16, 64)},
    BCI_SCORER: {"num_texts": (1, 4, 16), "num_videos": (1, 256, 256)},
}
# Max abs difference of any graph output from the golden (FP32 torch) output that the self-check at load accepts:
# the fallback for bundles that record no per-output tolerances (`output_tolerance`).
GOLDEN_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.25}
# Per-output relative tolerances (`output_tolerances`): the error measured when the bundle was written (ONNX
# Runtime on the CPU against torch FP32), times this margin for other back ends' kernels (TensorRT, CUDA), and
# never below a floor per precision (the rounding such a back end may add: TF32 / FP16 accumulation, INT8 kernels).
TOLERANCE_MARGIN = 4.0
MIN_RELATIVE_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "int8": 2e-2}


# ------------------------------------------------------------------------------------------------ layout
def graph_file(graph: str, precision: str) -> str:
    """Where a graph of a precision lives inside a bundle (relative path)."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; graphs: {', '.join(GRAPHS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    if precision in _QUANTIZED_GRAPHS and graph not in _QUANTIZED_GRAPHS[precision]:
        precision = "fp32"
    return f"{precision}/{graph}.onnx"


def graph_files(precision: str) -> dict[str, str]:
    """{graph: relative path} of every graph of a precision: the manifest's `graphs[precision]`."""
    return {graph: graph_file(graph, precision) for graph in GRAPHS}


def engine_file(graph: str, precision: str, onnx_sha256: str, tensorrt_version: str, sm: str) -> str:
    """A TensorRT engine's relative path: named by graph, precision, ONNX hash, TensorRT version and GPU SM, so an
    engine is never used with another graph, TensorRT or GPU."""
    return f"{ENGINE_DIR}/{graph}.{precision}.{onnx_sha256[:12]}.trt{tensorrt_version}.sm{sm}.engine"


def timing_cache_file(tensorrt_version: str, sm: str) -> str:
    return f"{ENGINE_DIR}/timing.trt{tensorrt_version}.sm{sm}.cache"


# ------------------------------------------------------------------------------------------------ golden data
def golden_key(graph: str, side: str, name: str) -> str:
    """The key of one golden array: `graph/in/name` (an input) or `graph/out/name` (the FP32 torch output)."""
    if side not in ("in", "out"):
        raise ValueError(f"side must be 'in' or 'out', got {side!r}")
    return f"{graph}/{side}/{name}"


def parse_golden_key(key: str) -> tuple[str, str, str]:
    """(graph, side, name) of a golden key."""
    graph, side, name = key.split("/", 2)
    return graph, side, name


@dataclass(frozen=True)
class Golden:
    """Small inputs of every graph and the FP32 torch outputs for them: the self-check at load compares each back
    end against these. inputs[graph][name], outputs[graph][name]."""

    inputs: Mapping[str, Mapping[str, np.ndarray]]
    outputs: Mapping[str, Mapping[str, np.ndarray]]

    @classmethod
    def load(cls, path: str | Path) -> "Golden":
        inputs: dict = {}
        outputs: dict = {}
        with np.load(path) as data:
            for key in data.files:
                graph, side, name = parse_golden_key(key)
                (inputs if side == "in" else outputs).setdefault(graph, {})[name] = data[key]
        return cls(inputs, outputs)

    def save(self, path: str | Path) -> None:
        arrays = {}
        for side, groups in (("in", self.inputs), ("out", self.outputs)):
            for graph, named in groups.items():
                arrays |= {golden_key(graph, side, name): np.asarray(value) for name, value in named.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------------ manifest
def _check(value, kind, key: str, where: str):
    """`value` if it has the JSON type `kind` (int, float, str, bool, list, dict), else BundleError naming key."""
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool),
          list: lambda v: isinstance(v, (list, tuple)), dict: lambda v: isinstance(v, dict)}[kind](value)
    if not ok:
        raise BundleError(f"{where}: manifest key {key!r} should be {kind.__name__}, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class Thresholds:
    """The calibrated alert thresholds: start an event at `on`, end it below `off` (hysteresis)."""

    on: float
    off: float
    f1: float | None = None  # F1 of matched vs unmatched pairs at `on`, on the held-out split

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "Thresholds":
        # Values are kept as read (not converted), so the manifest written back is the same JSON.
        on = _check(d.get("on"), float, "score_stats.threshold.on", where)
        off = _check(d.get("off", on), float, "score_stats.threshold.off", where)
        f1 = d.get("f1")
        return cls(on, off, None if f1 is None else _check(f1, float, "score_stats.threshold.f1", where))

    def to_dict(self) -> dict:
        return {"on": self.on, "off": self.off} | ({} if self.f1 is None else {"f1": self.f1})


@dataclass(frozen=True)
class ScoreStats:
    """Matched (positive) and unmatched (negative) pair score statistics on a held-out split, and the thresholds
    chosen from them."""

    positive: Mapping[str, float]
    negative: Mapping[str, float]
    threshold: Thresholds

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "ScoreStats":
        return cls(_check(d.get("positive", {}), dict, "score_stats.positive", where),
                   _check(d.get("negative", {}), dict, "score_stats.negative", where),
                   Thresholds.from_dict(_check(d.get("threshold"), dict, "score_stats.threshold", where), where))

    def to_dict(self) -> dict:
        return {"positive": dict(self.positive), "negative": dict(self.negative), "threshold": self.threshold.to_dict()}


@dataclass(frozen=True)
class ScorerInputs:
    """Which packed encoder outputs feed the scorer, per side (names of `text_encoder` / `video_encoder` outputs)."""

    text: tuple[str, ...]
    video: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "ScorerInputs":
        return cls(tuple(_check(d.get("text"), list, "scorer_inputs.text", where)),
                   tuple(_check(d.get("video"), list, "scorer_inputs.video", where)))

    def to_dict(self) -> dict:
        return {"text": list(self.text), "video": list(self.video)}


@dataclass(frozen=True)
class Validation:
    """Figures measured when the bundle was written (reports, not inputs): per precision and graph the max
    |ONNX Runtime - torch| at untraced batch sizes, retrieval on a held-out split, the INT8 gate's figures."""

    max_abs_diff_vs_torch: Mapping[str, Any] = field(default_factory=dict)
    retrieval: Mapping[str, Any] | None = None
    int8_gate: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "Validation":
        _no_unknown_keys(d, {f.name for f in dataclasses.fields(cls)}, where, "validation.")
        return cls(**d)

    def to_dict(self) -> dict:
        return _drop_none({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class GalleryInfo:
    """The background gallery (`hbci.runtime.gallery`): video packs of held-out windows without any particular
    event, against which a standing query's null score distribution is measured. Derived from the model (it is
    listed in `files` and verified, never part of the bundle id)."""

    file: str  # relative path of the .npz (one float16 array per scorer video input, [windows, ...])
    windows: int
    precision: str  # the video encoder precision that encoded the windows
    source: str  # what the windows are (generator, seeds, window and stride), for the record

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "GalleryInfo":
        _no_unknown_keys(d, {f.name for f in dataclasses.fields(cls)}, where, "gallery.")
        return cls(_check(d.get("file"), str, "gallery.file", where), _check(d.get("windows"), int,
                   "gallery.windows", where), _check(d.get("precision"), str, "gallery.precision", where),
                   _check(d.get("source"), str, "gallery.source", where))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Shipped:
    """Set on a bundle cut down from another (the shipped demo bundle keeps one precision)."""

    from_bundle_id: str
    dropped_precisions: tuple[str, ...]
    dropped_engines: bool

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "Shipped":
        return cls(_check(d.get("from_bundle_id"), str, "shipped.from_bundle_id", where),
                   tuple(_check(d.get("dropped_precisions"), list, "shipped.dropped_precisions", where)),
                   _check(d.get("dropped_engines"), bool, "shipped.dropped_engines", where))

    def to_dict(self) -> dict:
        return {"from_bundle_id": self.from_bundle_id, "dropped_precisions": list(self.dropped_precisions),
                "dropped_engines": self.dropped_engines}


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _no_unknown_keys(d: Mapping, known: set[str], where: str, prefix: str = "") -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise BundleError(f"{where}: unknown manifest key '{prefix}{unknown[0]}' (format version {FORMAT_VERSION} "
                          f"knows: {', '.join(sorted(known))})")


_REQUIRED = ("files", "graphs", "num_frames", "max_words", "image_size", "mean", "std", "tokenizer", "golden")


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`, typed. Optional fields are None when absent (and are then left out of the file), so a
    manifest read and written back is the same JSON and keeps its bundle id. Treat the mappings as read-only:
    change a manifest with `dataclasses.replace`.

    A new field (a later format version): add it here with a default of None; its JSON type comes from its
    annotation (`_field_kind`), so nothing else needs to know about it."""

    num_frames: int  # T: frames per clip
    max_words: int  # L: tokens per text
    image_size: int  # S: frames are S x S after resize and centre crop
    mean: tuple[float, float, float]  # normalisation, RGB in [0, 1]
    std: tuple[float, float, float]
    graphs: Mapping[str, Mapping[str, str]]  # precision -> graph -> relative path (see graph_files)
    tokenizer: str = TOKENIZER_FILE
    golden: str = GOLDEN_FILE
    format_version: int = FORMAT_VERSION
    precisions: tuple[str, ...] | None = None
    embed_dim: int | None = None
    model_config: Mapping[str, Any] | None = None  # the model's config as trained (hbci.config.ModelConfig)
    golden_tolerance: Mapping[str, float] | None = None  # precision -> absolute self-check tolerance (fallback)
    # precision -> graph -> output -> relative self-check tolerance (`output_tolerances`); absent in old bundles
    output_tolerance: Mapping[str, Any] | None = None
    gallery: GalleryInfo | None = None  # the background gallery for per-query alert thresholds
    profiles: Mapping[str, Mapping[str, tuple[int, int, int]]] | None = None  # graph -> axis -> (min, opt, max)
    scorer_inputs: ScorerInputs | None = None
    fp32_ops_in_fp16: tuple[str, ...] | None = None
    tools: Mapping[str, str] | None = None  # versions of the tools that wrote the bundle
    source: Mapping[str, Any] | None = None  # what export built it from (its up-to-date check compares this)
    validation: Validation | None = None
    checkpoint_versions: Mapping[str, str] | None = None
    score_stats: ScoreStats | None = None
    engines: Mapping[str, Mapping[str, str]] | None = None  # precision -> graph -> relative engine path
    shipped: Shipped | None = None
    files: Mapping[str, str] = field(default_factory=dict)  # relative path -> sha256: set by write_manifest
    # The graphs that define the model: graph -> sha256, and their precision (fp32 from export; kept when a
    # shipped copy drops those files). Set by write_manifest from the most precise graphs when absent.
    model_graphs: Mapping[str, str] | None = None
    model_precision: str | None = None
    bundle_id: str | None = None  # model_id: set by write_manifest
    manifest_sha256: str | None = None  # of everything else in the manifest: set by write_manifest

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST) -> "Manifest":
        """Parse and type-check a manifest; BundleError names a missing, unknown or mistyped key."""
        _no_unknown_keys(d, {f.name for f in dataclasses.fields(cls)}, where)
        for key in _REQUIRED:
            if key not in d:
                raise BundleError(f"{where}: manifest lacks {key!r}")
        values = {}
        for key, value in d.items():
            kind = _FIELD_KINDS[key]
            if value is None:
                pass
            elif kind in _RECORDS:
                value = kind.from_dict(_check(value, dict, key, where), where)
            elif kind is tuple:
                value = tuple(_check(value, list, key, where))
            else:
                _check(value, kind, key, where)
            values[key] = value
        manifest = cls(**values)
        for precision, graphs in manifest.graphs.items():
            missing = [g for g in GRAPHS if g not in _check(graphs, dict, f"graphs.{precision}", where)]
            if missing:
                raise BundleError(f"{where}: manifest names no {missing[0]} graph for {precision}")
        return manifest

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if _FIELD_KINDS[f.name] in _RECORDS:
                value = value.to_dict()
            elif _FIELD_KINDS[f.name] is tuple:
                value = list(value)
            out[f.name] = value
        return out

    @property
    def thresholds(self) -> Thresholds | None:
        return self.score_stats.threshold if self.score_stats is not None else None

    def tolerance(self, precision: str) -> float:
        """The absolute self-check tolerance of a precision (the fallback of `output_check`)."""
        return float((self.golden_tolerance or GOLDEN_TOLERANCE).get(precision, GOLDEN_TOLERANCE[precision]))

    def output_check(self, precision: str, graph: str, output: str) -> tuple[float, bool]:
        """(tolerance, relative) for one graph output's self-check: its recorded relative tolerance, or, when the
        bundle records none for it (bundles written before tolerances were recorded), the precision's absolute
        one."""
        recorded = ((self.output_tolerance or {}).get(precision) or {}).get(graph, {}).get(output)
        if recorded is None:
            return self.tolerance(precision), False
        return float(recorded), True

    def max_batch(self, graph: str, axis: str) -> int:
        """The largest size of a dynamic axis a call may use (the engines' optimisation profile)."""
        profile = (self.profiles or PROFILES).get(graph, PROFILES[graph])
        return int(profile.get(axis, PROFILES[graph][axis])[2])

    def files_of(self, precision: str) -> list[str]:
        """Every file the graphs (and engines) of one precision need, plus the tokenizer and golden data."""
        rels = [self.tokenizer, self.golden, *self.graphs[precision].values()]
        rels += [self.gallery.file] if self.gallery is not None else []
        return rels + list((self.engines or {}).get(precision, {}).values())


_RECORDS = (Thresholds, ScoreStats, ScorerInputs, Validation, Shipped, GalleryInfo)


def _field_kind(annotation: str):
    """The JSON type of a Manifest field, from its annotation: a record class, tuple (a JSON list read as a tuple),
    dict, int, float, str or bool. Raises at import for an annotation it cannot map."""
    name = annotation.replace(" | None", "").strip()
    records = {cls.__name__: cls for cls in _RECORDS}
    if name in records:
        return records[name]
    base = name.split("[")[0]
    kinds = {"tuple": tuple, "Mapping": dict, "dict": dict, "int": int, "float": float, "str": str, "bool": bool}
    if base not in kinds:
        raise TypeError(f"Manifest field annotation {annotation!r} has no JSON type")
    return kinds[base]


_FIELD_KINDS = {f.name: _field_kind(f.type) for f in dataclasses.fields(Manifest)}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_id(manifest: "Manifest") -> str:
    """The bundle id (16 hex digits): sha256 of what defines the model, never of derived files (see the module
    docstring)."""
    body = {"graphs": dict(manifest.model_graphs or {}), "precision": manifest.model_precision,
            "tokenizer": manifest.files.get(manifest.tokenizer), "num_frames": manifest.num_frames,
            "max_words": manifest.max_words, "image_size": manifest.image_size, "mean": list(manifest.mean),
            "std": list(manifest.std), "model_config": manifest.model_config}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def manifest_sha256(raw: Mapping) -> str:
    """The manifest's integrity: sha256 of its canonical JSON without this hash itself."""
    body = {k: v for k, v in raw.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; bundles are read by service accounts too
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------ bundle
@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder and typed manifest, with the facts the runtime needs as attributes."""

    root: Path
    manifest: Manifest

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    @property
    def num_frames(self) -> int:
        return self.manifest.num_frames

    @property
    def max_words(self) -> int:
        return self.manifest.max_words

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.manifest.mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.manifest.std)

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest.graphs)

    @property
    def thresholds(self) -> Thresholds | None:
        return self.manifest.thresholds

    def graph_path(self, graph: str, precision: str) -> Path:
        graphs = self.manifest.graphs
        if precision not in graphs:
            raise BundleError(f"{self.root}: no {precision} graphs in this bundle (has: {', '.join(graphs)})")
        return self.root / graphs[precision][graph]

    def graph_sha256(self, graph: str, precision: str) -> str | None:
        """The manifest's hash of a graph file (None when the manifest has not hashed it yet)."""
        return self.manifest.files.get(self.manifest.graphs[precision][graph])

    def engine_path(self, graph: str, precision: str) -> Path | None:
        rel = (self.manifest.engines or {}).get(precision, {}).get(graph)
        return None if rel is None else self.root / rel

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest.tokenizer

    @property
    def golden_path(self) -> Path:
        return self.root / self.manifest.golden

    def golden(self) -> Golden:
        return Golden.load(self.golden_path)

    @property
    def gallery_path(self) -> Path | None:
        return None if self.manifest.gallery is None else self.root / self.manifest.gallery.file


def load_bundle(root: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and verify a bundle folder; raise BundleError naming the file at fault."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: not found (is {root} a model bundle?)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: not a bundle manifest")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        hint = " (rewrite it with: python scripts/upgrade_bundle.py BUNDLE)" if version == 1 else ""
        raise BundleError(f"{path}: unknown bundle format version {version!r} (this runtime reads "
                          f"{FORMAT_VERSION}){hint}")
    if raw.get("manifest_sha256") != manifest_sha256(raw):
        raise BundleError(f"{path}: manifest was modified after it was written (manifest hash mismatch)")
    manifest = Manifest.from_dict(raw, str(path))
    if manifest.bundle_id != model_id(manifest):
        raise BundleError(f"{path}: manifest was modified after it was written (bundle id mismatch)")
    if verify_hashes:
        for rel, expected in manifest.files.items():
            file = root / rel
            if not file.is_file():
                raise BundleError(f"{file}: listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{file}: contents differ from the manifest (sha256 mismatch): "
                                  f"the file was changed or damaged")
    return Bundle(root, manifest)


def write_manifest(root: str | Path, manifest: Manifest) -> Manifest:
    """Hash every file the manifest names, set the model graphs if absent, the bundle id and the manifest hash,
    write manifest.json atomically; return it."""
    root = Path(root)
    rels = {manifest.tokenizer, manifest.golden} | ({manifest.gallery.file} if manifest.gallery else set())
    for group in (manifest.graphs, manifest.engines or {}):
        rels |= {rel for per_precision in group.values() for rel in per_precision.values()}
    files = {rel: sha256_file(root / rel) for rel in sorted(rels)}
    manifest = dataclasses.replace(manifest, files=files)
    if manifest.model_graphs is None:
        precision = next((p for p in PRECISIONS if p in manifest.graphs), None)
        if precision is None:
            raise BundleError(f"{root}: a bundle needs graphs")
        manifest = dataclasses.replace(manifest, model_precision=precision, model_graphs={
            graph: files[rel] for graph, rel in sorted(manifest.graphs[precision].items())})
    manifest = dataclasses.replace(manifest, bundle_id=model_id(manifest), manifest_sha256=None)
    manifest = dataclasses.replace(manifest, manifest_sha256=manifest_sha256(manifest.to_dict()))
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode())
    return manifest


def upgrade_manifest(root: str | Path) -> Manifest:
    """Rewrite a format-1 bundle's manifest as format 2 (its files untouched). The model graphs are its FP32
    graphs, or, for a copy that dropped them (the shipped demo bundle), its most precise graphs. A format-1
    manifest edited after it was written is refused, as format 1 refused it."""
    root = Path(root)
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot be read ({exc})") from None
    if raw.get("format_version") != 1:
        raise BundleError(f"{path}: format version {raw.get('format_version')!r}, not 1: nothing to upgrade")
    body = {k: v for k, v in raw.items() if k != "bundle_id"}
    if raw.get("bundle_id") != hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]:
        raise BundleError(f"{path}: manifest was modified after it was written (bundle id mismatch)")
    body["format_version"] = FORMAT_VERSION
    return write_manifest(root, Manifest.from_dict(body, str(path)))


# ------------------------------------------------------------------------------------------------ tolerances
def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| over the output's scale (max |expected|, at least 1e-6): comparable across outputs
    of any scale (unit-vector entries ~0.2, pooled features ~6). inf for a shape mismatch, NaN for NaNs."""
    if got.shape != expected.shape:
        return float("inf")
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    return float(np.abs(got.astype(np.float64) - expected).max(initial=0.0)) / scale


def output_tolerances(measured: Mapping[str, Mapping[str, float]], precision: str) -> dict:
    """{graph: {output: relative tolerance}} from the relative errors measured on the golden inputs: the error
    times TOLERANCE_MARGIN, at least MIN_RELATIVE_TOLERANCE[precision], rounded up to two significant digits."""
    def tolerance(error: float) -> float:
        value = max(TOLERANCE_MARGIN * float(error), MIN_RELATIVE_TOLERANCE[precision])
        step = 10.0 ** (np.floor(np.log10(value)) - 1)
        return float(np.round(np.ceil(value / step - 1e-9) * step, 12))

    return {graph: {name: tolerance(error) for name, error in sorted(outputs.items())}
            for graph, outputs in sorted(measured.items())}


# ------------------------------------------------------------------------------------------------ thresholds
def score_statistics(scores: np.ndarray, owners: np.ndarray) -> ScoreStats:
    """Statistics of matched and unmatched (caption, video) scores on a held-out set ([captions, videos], owners:
    each caption's video), and the threshold pair the live monitor defaults to: `on` is the score that best
    separates them (max F1 of matched vs unmatched pairs), `off` sits halfway back toward the negatives' 99th
    percentile, giving hysteresis."""
    positive_mask = np.zeros(scores.shape, bool)
    positive_mask[np.arange(len(owners)), owners] = True
    positives, negatives = scores[positive_mask], scores[~positive_mask]

    def describe(x):
        q = np.quantile(x, [0.01, 0.05, 0.5, 0.95, 0.99, 0.999])
        return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
                **{f"p{p}": float(v) for p, v in zip(("1", "5", "50", "95", "99", "99.9"), q)}}

    candidates = np.unique(np.quantile(np.concatenate([positives, negatives]), np.linspace(0.5, 0.9999, 400)))
    best, best_f1 = float(candidates[-1]), -1.0
    for threshold in candidates:
        tp = float((positives >= threshold).sum())
        fp = float((negatives >= threshold).sum())
        fn = float(positives.size - tp)
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    negative_p99 = float(np.quantile(negatives, 0.99))
    off = best - 0.5 * max(best - negative_p99, 0.0)
    return ScoreStats(describe(positives), describe(negatives), Thresholds(best, off, best_f1))


def default_thresholds(manifest: Manifest) -> tuple[float, float] | None:
    """(on, off) from a manifest's calibrated `score_stats.threshold`, or None."""
    t = manifest.thresholds
    return None if t is None else (t.on, t.off)


def resolve_thresholds(calibrated: Thresholds | None, on: float | None = None, off: float | None = None,
                       bundle_id: str = "") -> tuple[float, float]:
    """The (on, off) pair to use: given values win; without `on`, the calibrated pair; with `on` alone, `off`
    keeps the calibrated hysteresis gap below it (no gap without calibration). ConfigError when there is
    nothing to go on, or when off > on or either is not finite."""
    if on is None:
        if calibrated is None:
            raise ConfigError(f"bundle {bundle_id} has no calibrated thresholds (its manifest has no score_stats: "
                              f"export it with --data); give a threshold (--threshold)")
        on, off = calibrated.on, calibrated.off if off is None else off
    elif off is None:
        off = on - (calibrated.on - calibrated.off) if calibrated is not None else on
    on, off = float(on), float(off)
    if not (np.isfinite(on) and np.isfinite(off)):
        raise ConfigError("thresholds must be finite numbers")
    if off > on:
        raise ConfigError(f"threshold_off ({off:g}) must not exceed threshold_on ({on:g})")
    return on, off
