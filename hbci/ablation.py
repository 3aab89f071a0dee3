"""The ablation table: `hbci-ablate CONFIG --out DIR [overrides]`.

Trains one row per component on the same data, budget and seed (the training pool and the evaluation clips are
decoded once and shared), from CLIP4Clip's mean pooling up to full HBCI and then the temporal negatives, and writes
a markdown table: t2v / v2t R@1 (with its standard error) and R@5 / MdR on the test split, t2v / v2t R@1 on the
held-out-look split when the config names one, the hard-negative pairs (left/right, up/down, event order) and the
training time of each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from hbci.config import ExperimentConfig, apply_overrides, load_config

__all__ = ["ROWS", "row_config", "run_ablation", "markdown_table", "standard_error", "main"]

_NO_TIME = {"temporal_negative_weight": 0.0, "swapped_caption_negatives": False, "rendered_order_negatives": False,
            "partial_window_negatives": False, "temporal_negative_margin": 0.0, "caption_negative_margin": 0.0}
_NO_EXTRAS = {"concepts": 1, "decorrelation_weight": 0.0, "distill_weight": 0.0, **_NO_TIME}

# Each row adds one component to the row before it; the last is the base config itself (the shipped recipe).
# seqTransf goes without the curvature path: under mean pooling it cost 2.2-7.8 points of t2v R@1 on six splits
# (README, ablation), and a baseline should be the stronger of the two.
ROWS: list[tuple[str, dict]] = [
    ("mean pooling (CLIP4Clip meanP)",
     {"temporal_layers": 0, "video_pooling": "mean", "levels": (3,), **_NO_EXTRAS}),
    ("temporal transformer + mean (CLIP4Clip seqTransf)",
     {"video_pooling": "mean", "levels": (3,), "temporal_curvature": False, **_NO_EXTRAS}),
    ("text-guided pooling only (X-Pool style)", {"levels": (3,), **_NO_EXTRAS}),
    ("+ concept decoupling", {"levels": (3,), "distill_weight": 0.0, **_NO_TIME}),
    ("+ BCI (levels 1-3)", {"distill_weight": 0.0, **_NO_TIME}),
    ("+ cross-level distillation (full HBCI)", _NO_TIME),
    ("+ temporal negatives (full HBCI, shipped recipe)", {}),
]


def row_config(base: ExperimentConfig, index: int, out: Path) -> ExperimentConfig:
    _, changes = ROWS[index]
    model = dataclasses.replace(base.model, **changes)
    train = dataclasses.replace(base.train, out_dir=str(out / f"row{index + 1}"))
    return dataclasses.replace(base, model=model, train=train)


def standard_error(percent: float, n: int) -> float:
    """Binomial standard error (percentage points) of a rate measured on n queries."""
    p = percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def markdown_table(results: list[tuple[str, dict]]) -> str:
    """Test t2v/v2t R@1 with standard errors, R@5, t2v MdR; held-out-look R@1 (when run); hard-negative pairs."""
    held = any("heldout" in res for _, res in results)
    head = "| model | t2v R@1 | t2v R@5 | t2v MdR | v2t R@1 |" + (" held-out t2v R@1 | held-out v2t R@1 |" if held
                                                                  else "")
    head += " left/right | up/down | order | train time |"
    lines = [head, "|---" + "|---:" * (head.count("|") - 2) + "|"]

    def r1(res, side):
        n = res["n_captions"] if side == "t2v" else res["n_videos"]
        return f"{res[side]['R@1']:.1f} ± {standard_error(res[side]['R@1'], n):.1f}"

    def pair(res, name):
        v = res.get("variants", {}).get(name, {})
        return f"{v['accuracy']:.0f}%" if v.get("accuracy") is not None else "-"

    for name, res in results:
        test = res["test"]
        row = f"| {name} | {r1(test, 't2v')} | {test['t2v']['R@5']:.1f} | {test['t2v']['MdR']:.0f} | {r1(test, 'v2t')} |"
        if held:
            row += (f" {r1(res['heldout'], 't2v')} | {r1(res['heldout'], 'v2t')} |" if "heldout" in res
                    else " - | - |")
        row += (f" {pair(test, 'left/right')} | {pair(test, 'up/down')} | {pair(test, 'event order')} | "
                f"{res['train_seconds'] / 60:.1f} min |")
        lines.append(row)
    return "\n".join(lines)


def run_ablation(base: ExperimentConfig, out: Path, rows: list[int] | None = None, progress: bool = True) -> str:
    from hbci.backbone import config_image_size
    from hbci.data import load_clipset, load_pool
    from hbci.train import train

    out.mkdir(parents=True, exist_ok=True)
    m, d = base.model, base.data
    size = config_image_size(m.backbone)
    pool = load_pool(d, d.train_split, size, base.train.max_train_clips, progress)
    clips = {split: load_clipset(d, split, m.num_frames, size, 0, progress) if split else None
             for split in (d.val_split, d.test_split, d.heldout_split)}
    results = {}
    for index in rows or range(len(ROWS)):
        config = row_config(base, index, out)
        print(f"== row {index + 1}: {ROWS[index][0]}", file=sys.stderr)
        res = train(config, progress=progress, train_pool=pool, val_clips=clips[d.val_split],
                    test_clips=clips[d.test_split], heldout_clips=clips[d.heldout_split])
        results[index] = res
        ordered = [(ROWS[i][0], results[i]) for i in sorted(results)]  # ROWS order, whatever order they ran in
        (out / "ablation.json").write_text(json.dumps(ordered, indent=1))
    table = markdown_table(ordered)
    (out / "ablation.md").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog

    parser = argparse.ArgumentParser(prog="hbci-ablate", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="base config (full HBCI), e.g. small")
    parser.add_argument("overrides", nargs="*", help="section.key=value applied to every row")
    parser.add_argument("--out", required=True, help="folder for the runs and ablation.md")
    parser.add_argument("--rows", help="comma-separated 1-based rows to run (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        base = apply_overrides(load_config(args.config), args.overrides)
        rows = [int(r) - 1 for r in args.rows.split(",")] if args.rows else None
        print(run_ablation(base, Path(args.out), rows, progress=not args.no_progress))
    except HbciError as exc:
        print(f"hbci-ablate: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    return 0
