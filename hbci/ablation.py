"""The ablation table: `hbci-ablate CONFIG --out DIR [overrides]`.

Trains one row per component on the same data, budget and seed (clips are decoded once and shared), from
CLIP4Clip's mean pooling up to full HBCI, and writes a markdown table with t2v / v2t R@1, R@5, MdR and the
training time of each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hbci.config import ExperimentConfig, apply_overrides, load_config

__all__ = ["ROWS", "row_config", "run_ablation", "markdown_table", "main"]

_NO_EXTRAS = {"concepts": 1, "decorrelation_weight": 0.0, "distill_weight": 0.0}

# Each row adds one component to the row before it.
ROWS: list[tuple[str, dict]] = [
    ("mean pooling (CLIP4Clip meanP)",
     {"temporal_layers": 0, "video_pooling": "mean", "levels": (3,), **_NO_EXTRAS}),
    ("temporal transformer + mean (CLIP4Clip seqTransf)", {"video_pooling": "mean", "levels": (3,), **_NO_EXTRAS}),
    ("text-guided pooling only (X-Pool style)", {"levels": (3,), **_NO_EXTRAS}),
    ("+ concept decoupling", {"levels": (3,), "distill_weight": 0.0}),
    ("+ BCI (levels 1-3)", {"distill_weight": 0.0}),
    ("+ cross-level distillation (full HBCI)", {}),
]


def row_config(base: ExperimentConfig, index: int, out: Path) -> ExperimentConfig:
    _, changes = ROWS[index]
    model = dataclasses.replace(base.model, **changes)
    train = dataclasses.replace(base.train, out_dir=str(out / f"row{index + 1}"))
    return dataclasses.replace(base, model=model, train=train)


def markdown_table(results: list[tuple[str, dict]]) -> str:
    lines = ["| model | t2v R@1 | t2v R@5 | t2v MdR | v2t R@1 | v2t R@5 | v2t MdR | train time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results:
        t, v = res["test"]["t2v"], res["test"]["v2t"]
        lines.append(f"| {name} | {t['R@1']:.1f} | {t['R@5']:.1f} | {t['MdR']:.0f} | {v['R@1']:.1f} | "
                     f"{v['R@5']:.1f} | {v['MdR']:.0f} | {res['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def run_ablation(base: ExperimentConfig, out: Path, rows: list[int] | None = None, progress: bool = True) -> str:
    from hbci.data import load_clipset
    from hbci.train import train

    out.mkdir(parents=True, exist_ok=True)
    m, d = base.model, base.data
    from hbci.backbone import backbone_info, create_backbone

    size = backbone_info(create_backbone(m.backbone))["image_size"]
    clips = {split: load_clipset(d, split, m.num_frames, size, base.train.max_train_clips if split == d.train_split
                                 else 0, progress) for split in (d.train_split, d.val_split, d.test_split)}
    results = {}
    for index in rows or range(len(ROWS)):
        config = row_config(base, index, out)
        print(f"== row {index + 1}: {ROWS[index][0]}", file=sys.stderr)
        res = train(config, progress=progress, train_clips=clips[d.train_split], val_clips=clips[d.val_split],
                    test_clips=clips[d.test_split])
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
