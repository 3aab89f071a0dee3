"""Training: `hbci-train CONFIG [section.key=value ...]`.

AdamW with CLIP at a scaled learning rate, warmup + cosine, gradient clipping, validation every epoch, atomic
checkpoints with resume, a JSON-lines metrics log and a PNG of the curves, all seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hbci.checkpoint import save_checkpoint
from hbci.config import ExperimentConfig, apply_overrides, config_to_dict, load_config
from hbci.data import ClipSet, frames_to_tensor, load_clipset, tokenize
from hbci.evaluate import evaluate
from hbci.loss import hbci_loss
from hbci.metrics import format_metrics
from hbci.model import HBCI

__all__ = ["train", "main", "seed_everything", "param_groups"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: HBCI, cfg) -> list[dict]:
    """CLIP at lr * backbone_lr_scale; no weight decay on biases, norms, embeddings of positions, temperatures."""
    groups = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and "position" not in name and "queries" not in name
        groups[(name.startswith("clip."), decay)].append(param)
    return [{"params": params, "lr": cfg.lr * (cfg.backbone_lr_scale if backbone else 1.0),
             "weight_decay": cfg.weight_decay if decay else 0.0}
            for (backbone, decay), params in groups.items() if params]


def _block_order(n: int, block: int, generator: torch.Generator) -> np.ndarray:
    """A random order of n clips that keeps runs of `block` consecutive clips together (block 1: plain shuffle).

    In-batch negatives are what contrastive training learns from; runs of clips that differ only in motion
    direction, event order or attributes are the negatives that teach those distinctions.
    """
    blocks = torch.randperm((n + block - 1) // block, generator=generator).numpy()
    order = (blocks[:, None] * block + np.arange(block)[None]).reshape(-1)
    return order[order < n]


def _schedule(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class MetricsLog:
    """Append-only JSON lines; a resumed run keeps appending to the same file."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **record) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def train(config: ExperimentConfig, resume: bool = True, progress: bool = True,
          train_clips: ClipSet | None = None, val_clips: ClipSet | None = None, test_clips: ClipSet | None = None,
          log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Train to the end of the configured epochs (resuming from out_dir/last.pt when present).

    Returns {"val": ..., "test": ..., "train_seconds": ...}. Clip sets may be passed in (ablation runs share
    one decoded copy); otherwise they are loaded from the data config.
    """
    from tqdm import tqdm

    cfg, mcfg = config.train, config.model
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = HBCI(mcfg)
    size = model.image_size
    if train_clips is None:
        train_clips = load_clipset(config.data, config.data.train_split, mcfg.num_frames, size,
                                   cfg.max_train_clips, progress)
    if val_clips is None and config.data.val_split:
        val_clips = load_clipset(config.data, config.data.val_split, mcfg.num_frames, size, 0, progress)
    steps_per_epoch = max(1, len(train_clips) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, cfg.warmup_fraction))
    metrics_log = MetricsLog(out / "metrics.jsonl")
    (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))

    start_epoch, elapsed, best = 0, 0.0, None
    last = out / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state["config"] != config_to_dict(config):
            log(f"warning: {last} was written with another config; starting afresh")
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start_epoch, elapsed, best = state["epoch"], state["elapsed"], state.get("best")
            log(f"resumed from {last} at epoch {start_epoch}")

    captions = [list(item.captions) for item in train_clips.items]
    device_amp = torch.cuda.is_available() and cfg.amp
    val_result = None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = _block_order(len(train_clips), cfg.shuffle_block, generator)
        picks = torch.randint(0, 1 << 30, (len(train_clips),), generator=generator).numpy()
        t0 = time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   file=sys.stderr, leave=False)
        for step in bar:
            index = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            texts = [captions[i][picks[i] % len(captions[i])] for i in index]
            frames = frames_to_tensor(train_clips.frames[index])
            mask = torch.from_numpy(train_clips.masks[index]).float()
            ids, word_mask = tokenize(texts, mcfg.max_words)
            with torch.autocast("cuda", enabled=device_amp):
                loss, parts = hbci_loss(model, model.encode_text(ids, word_mask), model.encode_video(frames, mask))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            global_step = epoch * steps_per_epoch + step + 1
            bar.set_postfix(loss=f"{parts['total']:.3f}")
            metrics_log.write(kind="train", epoch=epoch + 1, step=global_step, lr=scheduler.get_last_lr()[0],
                              **{f"loss_{k}": v for k, v in parts.items()})
        elapsed += time.time() - t0
        record = {"kind": "epoch", "epoch": epoch + 1, "train_seconds": round(elapsed, 1)}
        if val_clips is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            val_result = evaluate(model, val_clips, cfg.eval_batch_size)
            record["val_t2v"], record["val_v2t"] = val_result["t2v"], val_result["v2t"]
            log(f"epoch {epoch + 1}: val t2v {format_metrics(val_result['t2v'])} | "
                f"v2t {format_metrics(val_result['v2t'])} ({elapsed:.0f}s)")
            score = val_result["t2v"]["R@1"] + val_result["v2t"]["R@1"]
            if best is None or score > best:
                best = score
                save_checkpoint(out / "best.pt", config, model, epoch=epoch + 1, val=val_result)
        metrics_log.write(**record)
        save_checkpoint(last, config, model, epoch=epoch + 1, elapsed=elapsed, best=best,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=torch.get_rng_state())
        plot_curves(metrics_log.read(), out / "curves.png")

    result = {"val": val_result, "train_seconds": round(elapsed, 1)}
    save_checkpoint(out / "final.pt", config, model, epoch=cfg.epochs)
    if test_clips is None and config.data.test_split:
        test_clips = load_clipset(config.data, config.data.test_split, mcfg.num_frames, size, 0, progress)
    if test_clips is not None:
        result["test"] = evaluate(model, test_clips, cfg.eval_batch_size)
        metrics_log.write(kind="test", t2v=result["test"]["t2v"], v2t=result["test"]["v2t"])
        log(f"test: t2v {format_metrics(result['test']['t2v'])} | v2t {format_metrics(result['test']['v2t'])}")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def plot_curves(records: list[dict], path: Path) -> None:
    """Training loss per step and validation R@1 per epoch, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("kind") == "train"]
    epochs = [r for r in records if r.get("kind") == "epoch" and "val_t2v" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    if steps:
        ax1.plot([r["step"] for r in steps], [r["loss_total"] for r in steps], lw=0.8)
    ax1.set(xlabel="step", ylabel="training loss", title="loss")
    if epochs:
        ax2.plot([r["epoch"] for r in epochs], [r["val_t2v"]["R@1"] for r in epochs], "o-", label="t2v R@1")
        ax2.plot([r["epoch"] for r in epochs], [r["val_v2t"]["R@1"] for r in epochs], "s-", label="v2t R@1")
        ax2.legend()
    ax2.set(xlabel="epoch", ylabel="%", title="validation")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from hbci.runtime.errors import HbciError

    parser = argparse.ArgumentParser(prog="hbci-train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config JSON file, or a shipped config name (small)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.concepts=1 train.epochs=2")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if out_dir/last.pt exists")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.overrides)
        train(config, resume=not args.no_resume, progress=not args.no_progress)
    except HbciError as exc:
        print(f"hbci-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hbci-train: interrupted; the last completed epoch is in last.pt (run again to resume)", file=sys.stderr)
        return 130
    return 0
