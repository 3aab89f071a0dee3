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
import datetime
import functools
import json
import math
import os
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from hbci.checkpoint import save_checkpoint
from hbci.config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from hbci.data import ClipSet, frames_to_tensor, load_clipset, tokenize
from hbci.evaluate import evaluate
from hbci.loss import hbci_loss
from hbci.metrics import format_metrics
from hbci.model import HBCI
from hbci.runtime.errors import ConfigError

__all__ = ["train", "main", "seed_everything", "param_groups", "Distributed", "init_distributed", "gather_packs",
           "batch_loss", "sync_gradients"]

# Generous: the other processes wait at a barrier while rank 0 evaluates a whole split.
DIST_TIMEOUT = datetime.timedelta(hours=2)


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


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Where this process sits: rank and world size (1 without torchrun), and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no GPU is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> Distributed:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (NCCL on GPUs, gloo on CPUs).
    Without them (or with WORLD_SIZE 1) this is a single process and nothing is initialised."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world <= 1:
        return Distributed(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=DIST_TIMEOUT)
    return Distributed(rank, world, local_rank, dev)


@contextmanager
def _local_rank_zero_first(dist: Distributed, enabled: bool = True):
    """Local rank 0 runs the block first (filling a download or frame cache), the other processes after it."""
    if enabled and dist.active and dist.local_rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if enabled and dist.active and dist.local_rank == 0:
            dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the gradient of the gathered tensor over the processes and
    hands each process its own slice (a reduce-scatter), as torch.distributed.nn.functional.all_gather does."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        world, rank = td.get_world_size(), td.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        td.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        grad = grad.contiguous()
        if td.get_backend() == "nccl":
            out = grad.new_empty((ctx.rows, *grad.shape[1:]))
            td.reduce_scatter_tensor(out, grad)
            return out
        grad = grad.clone()  # gloo has no reduce-scatter: all-reduce, then keep this process's rows
        td.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_packs(text: dict, video: dict, dist: Distributed) -> tuple[dict, dict]:
    """Every process's text and video packs, concatenated along the batch in rank order; the gradient of each
    slice goes back to the process that owns it (summed over the processes, see the module docstring).

    All pack tensors travel as one flat [b, F] tensor, so a step makes one collective call.
    """
    if not dist.active:
        return text, video
    tensors = list(text.values()) + list(video.values())
    b = tensors[0].shape[0]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    flat = torch.cat([t.reshape(b, -1).to(dtype) for t in tensors], 1)
    gathered = _GatherWithGrad.apply(flat)
    parts = gathered.split([t[0].numel() for t in tensors], 1)
    out = [part.reshape(-1, *t.shape[1:]).to(t.dtype) for part, t in zip(parts, tensors)]
    return dict(zip(text, out[:len(text)])), dict(zip(video, out[len(text):]))


def batch_loss(model: HBCI, ids: torch.Tensor, word_mask: torch.Tensor, frames: torch.Tensor,
               frame_mask: torch.Tensor, dist: Distributed = Distributed(), amp_dtype: torch.dtype | None = None):
    """This process's slice of the global batch -> (loss over the global batch, its parts)."""
    with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        text, video = gather_packs(model.encode_text(ids, word_mask), model.encode_video(frames, frame_mask), dist)
        return hbci_loss(model, text, video)


def sync_gradients(model: torch.nn.Module, dist: Distributed, bucket_bytes: int = 32 << 20) -> None:
    """Average the gradients over the processes, in flat buckets (one all-reduce per bucket, not per tensor).

    A parameter without a gradient has none on every process (the processes run the same graph), so it is
    skipped everywhere and keeps None, as in a single process (AdamW then leaves it untouched).
    """
    if not dist.active:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        if not buckets or size + grad.numel() * grad.element_size() > bucket_bytes or buckets[-1][0].dtype != grad.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += grad.numel() * grad.element_size()
    for bucket in buckets:
        flat = torch.cat([g.reshape(-1) for g in bucket])
        torch.distributed.all_reduce(flat)
        flat /= dist.world
        for grad, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            grad.copy_(part.view_as(grad))


def _broadcast_parameters(model: torch.nn.Module, dist: Distributed) -> None:
    """Start every process from rank 0's weights (seeded inits agree already; this makes it a fact)."""
    if dist.active:
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, 0)


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


def train(config: ExperimentConfig, resume: bool = True, progress: bool = True,
          train_clips: ClipSet | None = None, val_clips: ClipSet | None = None, test_clips: ClipSet | None = None,
          log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Train to the end of the configured epochs (resuming from out_dir/last.pt when present).

    Returns {"val": ..., "test": ..., "train_seconds": ...} (on rank 0; other ranks return {}). Clip sets may be
    passed in (ablation runs share one decoded copy); otherwise they are loaded from the data config.
    """
    from tqdm import tqdm

    cfg, mcfg = config.train, config.model
    dist = init_distributed(cfg.device)
    main_process = dist.is_main
    if not main_process:
        progress, log = False, (lambda m: None)
    if dist.active and cfg.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {cfg.batch_size} (the global batch) is not divisible by the "
                          f"{dist.world} processes")
    local_batch = cfg.batch_size // dist.world
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    with _local_rank_zero_first(dist):  # a pretrained tag is downloaded once per machine
        model = HBCI(mcfg)
    size = model.image_size
    model.to(dist.device)
    _broadcast_parameters(model, dist)
    if dist.active and not config.data.cache_dir and train_clips is None:
        log(f"warning: {dist.world} processes each decode the videos and hold their own copy of the clips; "
            f"set data.cache_dir (and run hbci-prepare) to decode once and share one memory-mapped copy")
    with _local_rank_zero_first(dist, enabled=bool(config.data.cache_dir)):  # rank 0 materialises the clip sets
        if train_clips is None:
            train_clips = load_clipset(config.data, config.data.train_split, mcfg.num_frames, size,
                                       cfg.max_train_clips, progress)
        if val_clips is None and config.data.val_split and main_process:
            val_clips = load_clipset(config.data, config.data.val_split, mcfg.num_frames, size, 0, progress)
    if dist.active and len(train_clips) < cfg.batch_size:
        raise ConfigError(f"{len(train_clips)} training clips are fewer than one global batch ({cfg.batch_size})")
    steps_per_epoch = max(1, len(train_clips) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.warmup_fraction))
    amp_dtype = _amp_dtype(cfg, dist.device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if main_process:
        (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))

    start_epoch, elapsed, best = 0, 0.0, None
    last = out / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if not _same_config(state["config"], config):
            log(f"warning: {last} was written with another config; starting afresh")
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            start_epoch, elapsed, best = state["epoch"], state["elapsed"], state.get("best")
            log(f"resumed from {last} at epoch {start_epoch}")

    captions = [list(item.captions) for item in train_clips.items]
    val_result = None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = block_order(len(train_clips), cfg.shuffle_block, generator)
        picks = torch.randint(0, 1 << 30, (len(train_clips),), generator=generator).numpy()
        t0 = time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   file=sys.stderr, leave=False)
        for step in bar:
            # The same global batch on every process (same generator); each takes its slice, in rank order.
            index = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            if dist.active:
                index = index[dist.rank * local_batch:(dist.rank + 1) * local_batch]
            texts = [captions[i][picks[i] % len(captions[i])] for i in index]
            frames = frames_to_tensor(train_clips.frames[index]).to(dist.device, non_blocking=True)
            mask = torch.from_numpy(train_clips.masks[index]).float().to(dist.device)
            ids, word_mask = tokenize(texts, mcfg.max_words)
            loss, parts = batch_loss(model, ids.to(dist.device), word_mask.to(dist.device), frames, mask, dist,
                                     amp_dtype)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            sync_gradients(model, dist)
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            global_step = epoch * steps_per_epoch + step + 1
            bar.set_postfix(loss=f"{parts['total']:.3f}")
            if main_process:
                metrics_log.write(kind="train", epoch=epoch + 1, step=global_step, lr=scheduler.get_last_lr()[0],
                                  **{f"loss_{k}": v for k, v in parts.items()})
        elapsed += time.time() - t0
        if main_process:
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
            extra = {"scaler": scaler.state_dict()} if scaler is not None else {}
            save_checkpoint(last, config, model, epoch=epoch + 1, elapsed=elapsed, best=best,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            rng=torch.get_rng_state(), **extra)
            plot_curves(metrics_log.read(), out / "curves.png")
        dist.barrier()

    if not main_process:
        dist.barrier()  # rank 0 evaluates the test split
        return {}
    result = {"val": val_result, "train_seconds": round(elapsed, 1)}
    save_checkpoint(out / "final.pt", config, model, epoch=cfg.epochs)
    if test_clips is None and config.data.test_split:
        test_clips = load_clipset(config.data, config.data.test_split, mcfg.num_frames, size, 0, progress)
    if test_clips is not None:
        result["test"] = evaluate(model, test_clips, cfg.eval_batch_size)
        metrics_log.write(kind="test", t2v=result["test"]["t2v"], v2t=result["test"]["v2t"])
        log(f"test: t2v {format_metrics(result['test']['t2v'])} | v2t {format_metrics(result['test']['v2t'])}")
    (out / "result.json").write_text(json.dumps(result, indent=1))
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
