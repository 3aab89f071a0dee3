"""Training: `hbci-train CONFIG [section.key=value ...]`, one process or several under `torchrun`.

AdamW with CLIP at a scaled learning rate, warmup + cosine, gradient clipping, validation every epoch, atomic
checkpoints with resume, a JSON-lines metrics log and a PNG of the curves, all seeded.

Several processes (`torchrun --nproc_per_node N -m hbci.train CONFIG ...`) train exactly as one process on the
same global batch (`train.batch_size`); a test checks losses and gradients against a single process:

* every process takes its slice of the same global permutation of the clips (batch_size / N clips per step);
* the text and video packs are all-gathered with an autograd-aware gather, so every process computes the loss
  over the whole B x B batch; the gather's backward sums the gradient of each slice over the processes and
  returns it to the process that owns the slice;
* gradients are then averaged over the processes by an explicit all-reduce (not a DistributedDataParallel
  wrapper: the model is driven through encode_text / encode_video / the loss rather than one forward(), and which
  parameters get a gradient depends on the config, both of which DDP handles only with find_unused_parameters).
  Why the average is exact: the loss is the same on every process, so the gather hands each process N times the
  single-process gradient of its own slice, and parameters used after the gather (temperatures, the logit scale)
  get the full single-process gradient on every process. Averaging makes both the single-process gradient.
* rank 0 alone logs, plots, writes checkpoints and evaluates (the other processes wait at a barrier): encoding
  a test split once is short next to an epoch, and one process sees every score, so the metrics need no merge.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hbci.backbone import freeze_image_layers
from hbci.caption_order import swap_event_order
from hbci.checkpoint import save_checkpoint
from hbci.config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from hbci.distributed import (Distributed, broadcast_parameters, gather_packs, init_distributed,
                              local_rank_zero_first, sync_gradients)
from hbci.data import ClipSet, FramePool, frames_to_tensor, load_clipset, load_pool, tokenize, window_policy
from hbci.evaluate import evaluate, synth_meta
from hbci.loss import hbci_loss, reorder, reversed_order, swapped_order
from hbci.metrics import format_metrics
from hbci.model import HBCI
from hbci.runtime.errors import ConfigError

__all__ = ["train", "main", "seed_everything", "param_groups", "Distributed", "init_distributed", "gather_packs",
           "batch_loss", "sync_gradients"]

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: HBCI, cfg) -> list[dict]:
    """CLIP at lr * backbone_lr_scale, its image tower at that * vision_lr_scale; no weight decay on biases, norms,
    embeddings of positions, temperatures."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and "position" not in name and "queries" not in name
        scale = 1.0
        if name.startswith("clip."):
            scale = cfg.backbone_lr_scale * (cfg.vision_lr_scale if name.startswith("clip.visual.") else 1.0)
        groups.setdefault((scale, decay), []).append(param)
    return [{"params": params, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay if decay else 0.0}
            for (scale, decay), params in groups.items()]


def block_order(n: int, block: int, generator: torch.Generator) -> np.ndarray:
    """A random order of n clips that keeps runs of `block` consecutive clips together (block 1: plain shuffle).

    In-batch negatives are what contrastive training learns from; runs of clips that differ only in motion
    direction, event order or attributes are the negatives that teach those distinctions.
    """
    blocks = torch.randperm((n + block - 1) // block, generator=generator).numpy()
    order = (blocks[:, None] * block + np.arange(block)[None]).reshape(-1)
    return order[order < n]


def warmup_cosine(total_steps: int, warmup_fraction: float):
    """LR factor per step: linear warm-up over the first fraction of the steps, then a cosine down to 0."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def batch_loss(model: HBCI, ids: torch.Tensor, word_mask: torch.Tensor, frames: torch.Tensor,
               frame_mask: torch.Tensor, dist: Distributed = Distributed(), amp_dtype: torch.dtype | None = None,
               reverse: torch.Tensor | None = None, cut: torch.Tensor | None = None,
               swapped_captions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               rendered: tuple[torch.Tensor, torch.Tensor] | None = None,
               partial: tuple[torch.Tensor, torch.Tensor] | None = None):
    """This process's slice of the global batch -> (loss over the global batch, its parts).

    reverse [b] (0/1) and cut [b] (see `hbci.data.WindowBatch`) give each window's temporal negatives, scored when
    `temporal_negative_weight` > 0: its frames played backwards, and its frames [cut:] before [:cut].
    swapped_captions (ids [b, L], mask [b, L], valid [b] 0/1): each window's caption with its events told in the
    other order (`hbci.caption_order`), scored against the window the same way. rendered (frames [n, T, 3, S, S],
    rows [n]): for those rows of the batch, the same window of the scene rendered with its events in the other
    order (`hbci.data.FramePool.order_partners`), the video-side order negative without the jump of a cut.
    partial (flat frame indices [b, T], valid [b]; `hbci.data.WindowBatch.partial`): a window of this slice's frames
    holding one of the two events whole and little of the other."""
    with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        feats = model.frame_features(frames)
        video = model.video_pack(feats, frame_mask)
        text = model.encode_text(ids, word_mask)
        kinds = {}  # name: (frame features of the negative, valid rows)
        if model.config.temporal_negative_weight > 0 and reverse is not None:
            kinds["reverse"] = (reorder(feats, reversed_order(frame_mask)), reverse)
            if cut is not None:
                kinds["swap"] = (reorder(feats, swapped_order(frame_mask, cut)), (cut > 0))
        if model.config.temporal_negative_weight > 0 and rendered is not None:
            rendered_frames, rows = rendered
            valid = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
            valid[rows] = True
            rendered_feats = feats.new_zeros(feats.shape)  # rows without one: zeros, never counted
            if len(rows):
                shown = model.frame_features(rendered_frames).to(feats.dtype)
                rendered_feats = rendered_feats.index_put((rows,), shown)
            kinds["rendered"] = (rendered_feats, valid)
        if model.config.temporal_negative_weight > 0 and partial is not None:
            order, valid = partial
            kinds["partial"] = (feats.flatten(0, 1)[order], valid)
        for name, (negative_feats, valid) in kinds.items():
            video |= {f"{name}/{k}": v for k, v in model.video_pack(negative_feats, frame_mask).items()}
            video[f"{name}/valid"] = valid.to(feats.dtype)
        with_text = model.config.temporal_negative_weight > 0 and swapped_captions is not None
        if with_text:
            swapped_ids, swapped_mask, valid = swapped_captions
            text |= {f"caption/{k}": v for k, v in model.encode_text(swapped_ids, swapped_mask).items()}
            text["caption/valid"] = valid.to(feats.dtype)
        text, video = gather_packs(text, video, dist)
        own_text, own_video = _unprefixed(text), _unprefixed(video)
        negatives = {name: (own_text, _unprefixed(video, name), video[f"{name}/valid"]) for name in kinds}
        if with_text:
            negatives["caption"] = (_unprefixed(text, "caption"), own_video, text["caption/valid"])
        return hbci_loss(model, own_text, own_video, negatives)


def _unprefixed(pack: dict, name: str | None = None) -> dict:
    """The entries of a pack under "name/" without that prefix (name None: the entries without any prefix)."""
    if name is None:
        return {k: v for k, v in pack.items() if "/" not in k}
    return {k.split("/", 1)[1]: v for k, v in pack.items() if k.startswith(name + "/") and k != f"{name}/valid"}


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


def _amp_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """bfloat16 where the GPU has it (no loss scaling needed), else float16 with a GradScaler; None on the CPU."""
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _same_config(saved: dict, config: ExperimentConfig) -> bool:
    """Whether a checkpoint's config is this one. Read through config_from_dict, so keys added to the config since
    the checkpoint was written take their defaults instead of making every older run look different."""
    try:
        return config_from_dict(saved) == config
    except ConfigError:
        return False


@dataclasses.dataclass
class _Run:
    """What a training run carries from step to step."""

    config: ExperimentConfig
    dist: Distributed
    model: HBCI
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    out: Path
    metrics: MetricsLog
    steps_per_epoch: int
    start_epoch: int = 0
    elapsed: float = 0.0
    best: float | None = None
    partners: np.ndarray | None = None  # FramePool.order_partners, with model.rendered_order_negatives


def _build_model(config: ExperimentConfig, dist: Distributed) -> HBCI:
    seed_everything(config.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, 6 % of a CPU step; no op here reads memory it did
    # not write, so the results are the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    with local_rank_zero_first(dist):  # a pretrained tag is downloaded once per machine
        model = HBCI(config.model)
    freeze_image_layers(model.clip, config.train.vision_frozen_blocks)
    model.to(dist.device)
    broadcast_parameters(model, dist)
    return model


def _load_data(config: ExperimentConfig, dist: Distributed, image_size: int, progress: bool, log,
               train_pool: FramePool | None, val_clips: ClipSet | None) -> tuple[FramePool, ClipSet | None]:
    """The training pool and (on rank 0) the validation clips, unless passed in."""
    if dist.active and not config.data.cache_dir and train_pool is None:
        log(f"warning: {dist.world} processes each decode the videos and hold their own copy of the frames; "
            f"set data.cache_dir (and run hbci-prepare) to decode once and share one memory-mapped copy")
    with local_rank_zero_first(dist, enabled=bool(config.data.cache_dir)):  # rank 0 materialises the arrays
        if train_pool is None:
            train_pool = load_pool(config.data, config.data.train_split, image_size, config.train.max_train_clips,
                                   progress)
        if val_clips is None and config.data.val_split and dist.is_main:
            val_clips = load_clipset(config.data, config.data.val_split, config.model.num_frames, image_size, 0,
                                     progress)
    if dist.active and len(train_pool) < config.train.batch_size:
        raise ConfigError(f"{len(train_pool)} training clips are fewer than one global batch "
                          f"({config.train.batch_size})")
    return train_pool, val_clips


def _start_run(config: ExperimentConfig, dist: Distributed, model: HBCI, train_size: int) -> _Run:
    cfg = config.train
    out = Path(cfg.out_dir)
    steps_per_epoch = max(1, train_size // cfg.batch_size)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  warmup_cosine(steps_per_epoch * cfg.epochs, cfg.warmup_fraction))
    amp_dtype = _amp_dtype(cfg, dist.device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if dist.is_main:
        (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))
    return _Run(config, dist, model, optimizer, scheduler, scaler, amp_dtype, out, MetricsLog(out / "metrics.jsonl"),
                steps_per_epoch)


def _resume(run: _Run, log) -> None:
    """Continue from out_dir/last.pt when it was written with this config."""
    last = run.out / "last.pt"
    if not last.exists():
        return
    state = torch.load(last, map_location="cpu", weights_only=True)
    if not _same_config(state["config"], run.config):
        log(f"warning: {last} was written with another config; starting afresh")
        return
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    run.start_epoch, run.elapsed, run.best = state["epoch"], state["elapsed"], state.get("best")
    log(f"resumed from {last} at epoch {run.start_epoch}")


def _train_step(run: _Run, pool: FramePool, captions: list[list[str]], index: np.ndarray, picks: np.ndarray,
                window_seed: int) -> dict[str, float]:
    """One optimiser step on the windows of `index` (this process's slice)."""
    model, dist, mcfg = run.model, run.dist, run.config.model
    windows = pool.windows(index, mcfg.num_frames, window_policy(run.config.data), window_seed, run.partners,
                           partial=mcfg.partial_window_negatives)
    texts = [captions[i][picks[i] % len(captions[i])] for i in index]
    frames = frames_to_tensor(windows.frames).to(dist.device, non_blocking=True)
    mask = torch.from_numpy(windows.masks).float().to(dist.device)
    ids, word_mask = tokenize(texts, mcfg.max_words)
    swapped = None
    if mcfg.swapped_caption_negatives:
        # Only windows that show both events in order (cut > 0) make the swapped caption wrong.
        rewritten = [swap_event_order(t) if c > 0 else None for t, c in zip(texts, windows.cut)]
        swapped_ids, swapped_mask = tokenize([r or t for r, t in zip(rewritten, texts)], mcfg.max_words)
        valid = torch.tensor([r is not None for r in rewritten])
        swapped = (swapped_ids.to(dist.device), swapped_mask.to(dist.device), valid.to(dist.device))
    rendered = None
    if run.partners is not None:
        rows = np.flatnonzero(windows.rendered_valid)
        rendered = (frames_to_tensor(windows.rendered[rows]).to(dist.device, non_blocking=True),
                    torch.from_numpy(rows).to(dist.device))
    partial = None
    if windows.partial is not None:
        partial = (torch.from_numpy(windows.partial).to(dist.device),
                   torch.from_numpy(windows.partial_valid).to(dist.device))
    loss, parts = batch_loss(model, ids.to(dist.device), word_mask.to(dist.device), frames, mask, dist,
                             run.amp_dtype, torch.from_numpy(windows.reverse).to(dist.device),
                             torch.from_numpy(windows.cut).to(dist.device), swapped, rendered, partial)
    run.optimizer.zero_grad(set_to_none=True)
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    sync_gradients(model, dist)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.config.train.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    return parts


def _train_epoch(run: _Run, epoch: int, pool: FramePool, captions: list[list[str]], progress: bool) -> None:
    from tqdm import tqdm

    cfg, dist = run.config.train, run.dist
    run.model.train()
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = block_order(len(pool), cfg.shuffle_block, generator)
    picks = torch.randint(0, 1 << 30, (len(pool),), generator=generator).numpy()
    local_batch = cfg.batch_size // dist.world
    t0 = time.time()
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
               file=sys.stderr, leave=False)
    for step in bar:
        # The same global batch on every process (same generator); each takes its slice, in rank order.
        index = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        if dist.active:
            index = index[dist.rank * local_batch:(dist.rank + 1) * local_batch]
        parts = _train_step(run, pool, captions, index, picks, cfg.seed * 1000 + epoch)
        bar.set_postfix(loss=f"{parts['total']:.3f}")
        if dist.is_main:
            run.metrics.write(kind="train", epoch=epoch + 1, step=epoch * run.steps_per_epoch + step + 1,
                              lr=run.scheduler.get_last_lr()[0], **{f"loss_{k}": v for k, v in parts.items()})
    run.elapsed += time.time() - t0


def _end_epoch(run: _Run, epoch: int, val_clips: ClipSet | None, log) -> dict | None:
    """Rank 0: validate when due (keeping best.pt), write last.pt and the curves. Returns the validation result."""
    cfg, model = run.config.train, run.model
    record, val_result = {"kind": "epoch", "epoch": epoch + 1, "train_seconds": round(run.elapsed, 1)}, None
    if val_clips is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
        data = run.config.data
        val_result = evaluate(model, val_clips, cfg.eval_batch_size, synth_meta(data, data.val_split), data.root)
        record["val_t2v"], record["val_v2t"] = val_result["t2v"], val_result["v2t"]
        if "variants" in val_result:
            record["val_variants"] = {k: v["accuracy"] for k, v in val_result["variants"].items()}
        log(f"epoch {epoch + 1}: val t2v {format_metrics(val_result['t2v'])} | "
            f"v2t {format_metrics(val_result['v2t'])} ({run.elapsed:.0f}s)")
        score = val_result["t2v"]["R@1"] + val_result["v2t"]["R@1"]
        if run.best is None or score > run.best:
            run.best = score
            save_checkpoint(run.out / "best.pt", run.config, model, epoch=epoch + 1, val=val_result)
    run.metrics.write(**record)
    extra = {"scaler": run.scaler.state_dict()} if run.scaler is not None else {}
    save_checkpoint(run.out / "last.pt", run.config, model, epoch=epoch + 1, elapsed=run.elapsed, best=run.best,
                    optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                    rng=torch.get_rng_state(), **extra)
    plot_curves(run.metrics.read(), run.out / "curves.png")
    return val_result


def _final_tests(run: _Run, tests: dict[str, ClipSet | None], progress: bool, log) -> dict:
    """Rank 0: final.pt, then every test split (test, and the held-out one when configured)."""
    data, mcfg = run.config.data, run.config.model
    save_checkpoint(run.out / "final.pt", run.config, run.model, epoch=run.config.train.epochs)
    result = {}
    for key, split in (("test", data.test_split), ("heldout", data.heldout_split)):
        clips = tests.get(key)
        if clips is None and split:
            clips = load_clipset(data, split, mcfg.num_frames, run.model.image_size, 0, progress)
        if clips is None:
            continue
        meta = synth_meta(data, split)
        result[key] = evaluate(run.model, clips, run.config.train.eval_batch_size, meta, data.root)
        run.metrics.write(kind=key, t2v=result[key]["t2v"], v2t=result[key]["v2t"])
        log(f"{key}: t2v {format_metrics(result[key]['t2v'])} | v2t {format_metrics(result[key]['v2t'])}")
    return result


def train(config: ExperimentConfig, resume: bool = True, progress: bool = True,
          train_pool: FramePool | None = None, val_clips: ClipSet | None = None,
          test_clips: ClipSet | None = None, heldout_clips: ClipSet | None = None,
          log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Train to the end of the configured epochs (resuming from out_dir/last.pt when present).

    Returns {"val", "test"[, "heldout"], "train_seconds"} (on rank 0; other ranks return {}). The training pool
    and clip sets may be passed in (ablation runs share one decoded copy); otherwise they are loaded from the data
    config.
    """
    cfg = config.train
    dist = init_distributed(cfg.device)
    if not dist.is_main:
        progress, log = False, (lambda m: None)
    if dist.active and cfg.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {cfg.batch_size} (the global batch) is not divisible by the "
                          f"{dist.world} processes")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    model = _build_model(config, dist)
    pool, val_clips = _load_data(config, dist, model.image_size, progress, log, train_pool, val_clips)
    run = _start_run(config, dist, model, len(pool))
    if config.model.rendered_order_negatives:
        run.partners = pool.order_partners()
        paired = int((run.partners >= 0).sum())
        if paired == 0:
            raise ConfigError(f"model.rendered_order_negatives: no item of split {config.data.train_split!r} names "
                              f"an order_negative video in the pool (hbci-synth writes that column)")
        log(f"rendered order negatives: {paired} of {len(pool)} training items have their scene with the events "
            f"swapped")
    if resume:
        _resume(run, log)
    captions = [list(item.captions) for item in pool.items]
    val_result = None
    for epoch in range(run.start_epoch, cfg.epochs):
        _train_epoch(run, epoch, pool, captions, progress)
        if dist.is_main:
            val_result = _end_epoch(run, epoch, val_clips, log) or val_result
        dist.barrier()
    if not dist.is_main:
        dist.barrier()  # rank 0 evaluates the test splits
        return {}
    result = {"val": val_result, "train_seconds": round(run.elapsed, 1),
              **_final_tests(run, {"test": test_clips, "heldout": heldout_clips}, progress, log)}
    (run.out / "result.json").write_text(json.dumps(result, indent=1))
    dist.barrier()
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
    from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog

    parser = argparse.ArgumentParser(prog="hbci-train", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.SIGINT)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
        return exit_code(exc)
    except KeyboardInterrupt:
        print("hbci-train: interrupted; the last completed epoch is in last.pt (run again to resume)", file=sys.stderr)
        return ExitCode.SIGINT
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
