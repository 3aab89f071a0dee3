"""Frame cache preparation: `hbci-prepare CONFIG [section.key=value ...]` decodes every video of the config's
splits once into `data.cache_dir` (see `hbci.framecache`), in parallel, resumably.

A video already cached is skipped, so an interrupted run is continued by running it again. A video that cannot be
decoded is reported with its path and reason, counted, and listed in failed.json (training then skips it with a
warning); the next run tries it again. Exit codes: 0 done (failures are warned about), 1 some videos failed and
--strict was given, 2 a configuration or dataset error.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from hbci.config import ExperimentConfig, apply_overrides, load_config
from hbci.runtime.errors import ConfigError, VideoError

__all__ = ["prepare", "main"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def prepare(config: ExperimentConfig, splits: list[str] | None = None, workers: int = 0, progress: bool = True,
            warn=_stderr) -> dict:
    """Cache every video of `splits` (default: the config's train, val and test splits).

    Returns counts: {"videos", "already_cached", "written", "failed", "partial_files_removed", "seconds"}.
    """
    from tqdm import tqdm

    from hbci.backbone import config_image_size
    from hbci.data import default_workers, load_items
    from hbci.framecache import CacheSpec, FrameCache, decode_video

    data = config.data
    if not data.cache_dir:
        raise ConfigError("data.cache_dir is not set: name the folder the frame cache goes to "
                          "(e.g. data.cache_dir=/data/msrvtt-frames)")
    spec = CacheSpec.from_config(data, config_image_size(config.model.backbone))
    cache = FrameCache(data.cache_dir, spec, data.root, create=True)
    removed = cache.remove_partial_files()
    if removed:
        warn(f"removed {removed} partial file(s) an interrupted run left in {cache.root}")

    splits = splits or [s for s in (data.train_split, data.val_split, data.test_split) if s]
    videos: dict[str, Path] = {}
    for split in dict.fromkeys(splits):
        for item in load_items(data, split, warn=warn):
            videos.setdefault(cache.key(item.path), item.path)  # a video shared by splits or spans: once
    todo = {key: path for key, path in videos.items() if not cache.has(path)}
    # Earlier failures stay listed until their video is cached (those of splits not asked for now as well).
    failures = {k: v for k, v in cache.failures().items() if k not in videos or k in todo}

    def one(path: Path) -> None:
        frames, times, meta = decode_video(path, spec)
        cache.write(path, frames, times, meta)

    t0, written, failed_now = time.time(), 0, 0
    bar = tqdm(total=len(todo), desc="preparing", disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max(1, workers or default_workers()))
    try:
        pending = {pool.submit(one, path): key for key, path in todo.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                error = future.exception()
                if error is None:
                    failures.pop(key, None)
                    written += 1
                elif not isinstance(error, Exception):
                    raise error  # an interrupt or exit, not a bad video
                else:
                    # Every failure is named and counted; a decoder crash of an unexpected kind too.
                    reason = error.reason if isinstance(error, VideoError) else f"{type(error).__name__}: {error}"
                    failures[key] = {"path": str(todo[key]), "reason": reason}
                    failed_now += 1
                    warn(f"warning: cannot cache {todo[key]}: {reason}")
                bar.update(1)
    finally:
        # On an interrupt the videos in progress finish (their writes are atomic); the queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        cache.write_failures(failures)
    if failures:
        warn(f"warning: {len(failures)} of {len(videos)} videos could not be cached (listed in "
             f"{cache.root / 'failed.json'}); training skips them")
    return {"videos": len(videos), "already_cached": len(videos) - len(todo), "written": written,
            "failed": len(failures), "failed_this_run": failed_now, "partial_files_removed": removed,
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog

    parser = argparse.ArgumentParser(prog="hbci-prepare", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE,
                                                               ExitCode.PARTIAL, ExitCode.SIGINT)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config JSON file or shipped config name; data.cache_dir must be set")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.root=/data/msrvtt")
    parser.add_argument("--splits", nargs="+", help="splits to cache (default: the config's train, val, test)")
    parser.add_argument("--workers", type=int, default=0, help="decoding threads (default: one per CPU core)")
    parser.add_argument("--strict", action="store_true", help="exit with 8 when any video could not be cached")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.overrides)
        summary = prepare(config, args.splits, args.workers, progress=not args.no_progress)
    except HbciError as exc:
        print(f"hbci-prepare: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("hbci-prepare: interrupted; the videos cached so far are kept (run again to continue)",
              file=sys.stderr)
        return ExitCode.SIGINT
    print(f"{summary['videos']} videos: {summary['already_cached']} already cached, {summary['written']} written, "
          f"{summary['failed']} failed ({summary['seconds']} s)")
    return ExitCode.PARTIAL if args.strict and summary["failed"] else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
