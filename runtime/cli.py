"""`hbci-run`: watch a camera, a video file or a stream for text queries; alerts as JSON lines on stdout.

    hbci-run --demo                                        # the shipped demo: no torch, a few seconds
    hbci-run --video clip.mp4 --query "a red circle moves left"
    hbci-run --camera 0 --query-file queries.txt --save-clips alerts/ --bundle my_bundle/

stdout carries only events, one JSON object per line, flushed at once (see `hbci.runtime.monitor` for the keys);
logs, the back end in use and the closing throughput/latency summary go to stderr.

Exit codes: see below (the project's one table: docs/exit-codes.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hbci.runtime.bundle import MANIFEST
from hbci.runtime.errors import (EXIT_CODE_TABLE, BundleError, ConfigError, ExitCode, HbciError, QueryError,
                                  exit_code, exit_codes_epilog, internal_error)
from hbci.runtime.pipeline import (ClipSink, JsonLinesSink, MonitorSettings, OverlaySink, Pipeline, RecentEvents,
                                   SourceSpec, summary_line)

__all__ = ["main", "build_parser", "EXIT_CODES"]

# The codes hbci-run returns, with their meanings from the project's table.
EXIT_CODES = {row.code: row.meaning for row in EXIT_CODE_TABLE
              if row.code in (ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.SOURCE, ExitCode.VIDEO,
                              ExitCode.OUTPUT, ExitCode.SIGINT, ExitCode.SIGTERM)}
log = logging.getLogger("hbci")


def build_parser() -> argparse.ArgumentParser:
    from hbci.runtime.backends import BACKENDS
    from hbci.runtime.retriever import PRECISIONS
    from hbci.runtime.gallery import DEFAULT_FALSE_ALARM_RATE
    from hbci.runtime.monitor import DEFAULT_SMOOTHING, DEFAULT_STRIDE, DEFAULT_WINDOW

    p = argparse.ArgumentParser(prog="hbci-run", description=__doc__.split("\n\n")[0],
                                epilog=exit_codes_epilog(EXIT_CODES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="model bundle folder (default: the shipped demo bundle)")
    p.add_argument("--demo", action="store_true",
                   help="monitor the demo stream (rendered once into the cache) for the demo queries, then say "
                        "where its known events were")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", metavar="N", help="camera index")
    src.add_argument("--video", metavar="PATH", help="video file")
    src.add_argument("--url", help="stream URL (rtsp://, http://, ...)")
    src.add_argument("--pipeline", metavar="STR", help="GStreamer pipeline (where OpenCV has GStreamer)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a video file like a camera at its own frame rate, dropping frames when behind "
                        "(default: read every frame as fast as possible, deterministic)")
    p.add_argument("--query", action="append", default=[],
                   help="a text query (repeat for several; they come before those of --query-file)")
    p.add_argument("--query-file", action="append", default=[], metavar="FILE",
                   help="UTF-8 file with one query per line; blank lines and lines starting with # are skipped")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="window span in seconds (%(default)s)")
    p.add_argument("--stride", type=float, default=DEFAULT_STRIDE, help="seconds between windows (%(default)s)")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING,
                   help="EMA weight of the past score, in [0, 1) (%(default)s: no smoothing)")
    p.add_argument("--threshold", type=float,
                   help="alert when the smoothed score reaches this, for every query (default: each query's own "
                        "threshold from the bundle's background gallery, else the bundle's calibrated 'on')")
    p.add_argument("--threshold-off", type=float,
                   help="end the alert below this (default: the calibrated 'off'; with --threshold alone, "
                        "--threshold minus the calibrated hysteresis gap)")
    p.add_argument("--false-alarm-rate", type=float, default=DEFAULT_FALSE_ALARM_RATE,
                   help="per-query thresholds: the share of the bundle's background gallery windows a query may "
                        "alert on (%(default)s; 0: the bundle's global thresholds for every query)")
    p.add_argument("--contrast", action="store_true",
                   help="contrast gate: a query alerts only on windows where it outscores its opposites (the "
                        "same caption with a direction word flipped or two colours exchanged) and, if it tells two "
                        "events in order, where the window's halves show them in that order: fewer look-alike "
                        "alerts, some recall lost")
    p.add_argument("--batch", type=int, default=8, help="windows per encoder call for files (live: always 1)")
    p.add_argument("--max-fps", type=float, default=0.0, help="use at most this many frames per second (0: all)")
    p.add_argument("--save-clips", metavar="DIR", help="write each event's frames as an mp4v file into DIR")
    p.add_argument("--show", action="store_true", help="show the frames with scores in a window (q/Esc stops)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="graph back end (%(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="graph precision; auto: fp16 where a GPU back end exists, else fp32, else what the bundle "
                        "has")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per graph (0: its default)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def _read_queries(args) -> list[str]:
    queries = [q for q in args.query]
    for name in args.query_file:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise QueryError(f"--query-file {name}: cannot be read ({getattr(exc, 'strerror', None) or exc})") \
                from None
        lines = [line.strip() for line in text.splitlines()]
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            raise QueryError(f"--query-file {name}: holds no query")
        queries += found
    for q in queries:
        if not q.strip():
            raise QueryError("a --query is empty")
    return queries


def _settings_errors(args) -> str | None:
    if args.window <= 0 or args.stride <= 0:
        return "--window and --stride must be positive"
    if not 0 <= args.smoothing < 1:
        return "--smoothing must be in [0, 1)"
    if not 0 <= args.false_alarm_rate < 1:
        return "--false-alarm-rate must be in [0, 1)"
    if args.max_fps < 0 or args.batch < 1 or args.threads < 0:
        return "--max-fps and --threads must be >= 0 and --batch >= 1"
    return None


class _Stopper:
    """SIGINT/SIGTERM: the first signal asks for a drain (the source is interrupted, the pipeline stops); a second
    SIGINT interrupts for real."""

    def __init__(self):
        self.signal: int | None = None
        self._watched: list = []

    def watch(self, target) -> None:
        """Stop `target` (a source: interrupt(); a pipeline: stop()) on a signal, at once if one came already."""
        self._watched.append(target)
        if self.signal is not None:
            self._stop(target)

    @staticmethod
    def _stop(target) -> None:
        (target.stop if hasattr(target, "stop") else target.interrupt)()

    def __call__(self, signum, frame) -> None:
        self.signal = self.signal or signum
        for target in self._watched:
            self._stop(target)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)


@dataclass(frozen=True)
class _Plan:
    queries: list[str]
    source: SourceSpec
    bundle_dir: Path
    demo_clips: list | None  # the demo stream's known clips, for the closing report


def _plan(args) -> _Plan:
    """What to watch, for which queries, with which bundle; ConfigError / QueryError / BundleError if unusable."""
    problem = _settings_errors(args)
    if problem:
        raise ConfigError(problem)
    queries = _read_queries(args)
    sources = [(k, getattr(args, k)) for k in ("camera", "video", "url", "pipeline") if getattr(args, k) is not None]
    known = None
    if args.demo:
        if sources:
            raise ConfigError("--demo brings its own stream; leave out --camera/--video/--url/--pipeline")
        from hbci.runtime.demo import DEMO_QUERIES, demo_stream

        path, known = demo_stream()
        log.info("demo stream: %s", path)
        sources = [("video", str(path))]
        queries = queries or list(DEMO_QUERIES)
    if not sources:
        raise ConfigError("give a source: --camera N, --video PATH, --url URL or --pipeline STR (or --demo)")
    if not queries:
        raise QueryError("give at least one --query or --query-file")
    if args.realtime and sources[0][0] != "video":
        log.warning("--realtime only changes video files; live sources are always real time")

    from hbci.runtime.demo import BUNDLE_DIR

    bundle_dir = Path(args.bundle) if args.bundle else BUNDLE_DIR
    if not (bundle_dir / MANIFEST).is_file():
        hint = " (the demo bundle is not installed: build it with scripts/build_demo_bundle.sh)" \
            if not args.bundle else ""
        raise BundleError(f"{bundle_dir}: not a model bundle{hint}")
    kind, target = sources[0]
    spec = SourceSpec({"video": "file"}.get(kind, kind), target, realtime=args.realtime, max_fps=args.max_fps)
    return _Plan(queries, spec, bundle_dir, known)


def _pipeline(args, plan: _Plan, source, sinks: list) -> Pipeline:
    from hbci.runtime.retriever import Retriever

    retriever = Retriever.load(plan.bundle_dir, backend=args.backend, precision=args.precision,
                               threads=args.threads)
    settings = MonitorSettings(window=args.window, stride=args.stride, smoothing=args.smoothing,
                               threshold_on=args.threshold, threshold_off=args.threshold_off, batch=args.batch,
                               false_alarm_rate=args.false_alarm_rate or None, contrast=args.contrast)
    if args.save_clips:
        sinks.insert(0, ClipSink(args.save_clips))  # first: it adds the clip's path to the events
    pipeline = Pipeline(source, retriever, plan.queries, settings=settings, sinks=sinks)
    monitor = pipeline.monitor
    log.info("monitoring %s for %d quer%s: window %.2f s, stride %.2f s, smoothing %.2f, threshold on %.4f "
             "off %.4f", source.name, len(plan.queries), "y" if len(plan.queries) == 1 else "ies", args.window,
             args.stride, args.smoothing, monitor.threshold_on, monitor.threshold_off)
    for index, text in monitor.query_list() if monitor.per_query_thresholds else []:
        on, off = monitor.thresholds_of(index)
        log.info("query %d %r: its own thresholds on %.4f off %.4f (false-alarm rate %g on the bundle's "
                 "background gallery)", index, text, on, off, args.false_alarm_rate)
    return pipeline


def _run(args, stopper: _Stopper) -> int:
    plan = _plan(args)
    overlay = [OverlaySink()] if args.show else []  # fails at once without a display
    events = RecentEvents() if plan.demo_clips is not None else None
    sinks = overlay + [JsonLinesSink(sys.stdout)] + ([events] if events is not None else [])
    # The source opens before the model loads, so a missing camera is reported within a second or two.
    source = plan.source.open()
    stopper.watch(source)
    try:
        pipeline = _pipeline(args, plan, source, sinks)
        stopper.watch(pipeline)
        try:
            pipeline.run()
        finally:
            if pipeline.started_at is not None:
                print(summary_line(pipeline), file=sys.stderr, flush=True)
    finally:
        source.close()
        for sink in overlay:
            sink.close()
    if events is not None:
        from hbci.runtime.demo import report_lines

        for line in report_lines(events.events(), plan.demo_clips, plan.queries, min_overlap=args.window / 2):
            print(line, file=sys.stderr)
    if stopper.signal is not None:
        return ExitCode.SIGTERM if stopper.signal == signal.SIGTERM else ExitCode.SIGINT
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse exits with 2 on bad usage
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(stream=sys.stderr, level=level, format="hbci-run %(levelname)s: %(message)s")
    import cv2

    if args.log_level != "debug":
        # OpenCV's own warnings ("can't open camera by index") would duplicate our one-line errors.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    stopper = _Stopper()
    stopper.install()
    try:
        return _run(args, stopper)
    except HbciError as exc:
        print(f"hbci-run: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        # The reader of the events went away (`hbci-run ... | head -1`): stop quietly.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps Python's exit-time flush from failing)
        return ExitCode.OK
    except KeyboardInterrupt:  # a second Ctrl-C while draining
        print("hbci-run: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except Exception as exc:  # the one place that turns a bug into one line and exit 1
        return internal_error("hbci-run", exc, args.log_level == "debug")


if __name__ == "__main__":
    sys.exit(main())
