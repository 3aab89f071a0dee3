"""`hbci-index` and `hbci-search`: thin commands over `hbci.runtime.archive.Archive`.

    hbci-index videos/ more_videos/ --db archive.db               # incremental: new, changed, gone files
    hbci-search --db archive.db --query "a red circle moves left" --top 5 [--json | --sheet hits.png]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from hbci.runtime.errors import BundleError, ExitCode, HbciError, exit_code, exit_codes_epilog, internal_error

__all__ = ["index_main", "search_main", "INDEX_EXIT_CODES", "SEARCH_EXIT_CODES"]

log = logging.getLogger("hbci")

# The codes each command returns (meanings: the project's one table, docs/exit-codes.md).
_COMMON = (ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.DATABASE, ExitCode.INDEX_MISMATCH,
           ExitCode.SIGINT)
INDEX_EXIT_CODES = (*_COMMON, ExitCode.PARTIAL)
SEARCH_EXIT_CODES = (*_COMMON, ExitCode.OUTPUT)


def _common(p: argparse.ArgumentParser) -> None:
    from hbci.runtime.backends import BACKENDS
    from hbci.runtime.retriever import PRECISIONS

    p.add_argument("--db", required=True, metavar="PATH|URI",
                   help="archive: a database path (embedded store), milvus://host:port/collection, or "
                        "milvus-lite:///path/file.db?collection=NAME")
    p.add_argument("--bundle", help="model bundle folder (default: the shipped demo bundle)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="graph back end (%(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="graph precision (auto: FP16 with a GPU back end, else FP32, else what the bundle has)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per graph (0: its default)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning")


def _retriever(args):
    from hbci.runtime.bundle import MANIFEST
    from hbci.runtime.demo import BUNDLE_DIR
    from hbci.runtime.retriever import Retriever

    bundle_dir = Path(args.bundle) if args.bundle else BUNDLE_DIR
    if not (bundle_dir / MANIFEST).is_file():
        raise BundleError(f"{bundle_dir}: not a model bundle")
    return Retriever.load(bundle_dir, backend=args.backend, precision=args.precision, threads=args.threads)


def _main(prog: str, parser: argparse.ArgumentParser, run, argv) -> int:
    args = parser.parse_args(argv)  # argparse exits with 2 on bad usage
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                        format=f"{prog} %(levelname)s: %(message)s")
    import cv2

    if args.log_level != "debug":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one-line errors say it once
    try:
        return run(args)
    except HbciError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (every file stored before it is kept)", file=sys.stderr)
        return ExitCode.SIGINT
    except Exception as exc:  # the one place that turns a bug into one line and exit 1
        return internal_error(prog, exc, args.log_level == "debug")


# ---------------------------------------------------------------------------------------------- hbci-index
def _index_parser() -> argparse.ArgumentParser:
    from hbci.runtime.archive.indexer import DEFAULT_STRIDE, DEFAULT_WINDOW

    p = argparse.ArgumentParser(prog="hbci-index", description="Index folders of videos into an archive: "
                                "windows, their embeddings and packs, thumbnails. Incremental and resumable.",
                                epilog=exit_codes_epilog(INDEX_EXIT_CODES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="DIR", help="folders (searched recursively) or video files")
    _common(p)
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="window span, seconds (%(default)s)")
    p.add_argument("--stride", type=float, default=DEFAULT_STRIDE, help="seconds between windows (%(default)s)")
    p.add_argument("--batch", type=int, default=8, help="windows per encoder call (%(default)s)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (%(default)s)")
    p.add_argument("--reindex", action="store_true",
                   help="drop everything stored and encode every file again (another bundle, window or stride)")
    p.add_argument("--strict", action="store_true", help="exit 8 when any file failed (default: 0, listed)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def _index(args) -> int:
    from hbci.runtime.archive.archive import Archive
    from hbci.runtime.archive.indexer import scan_videos
    from hbci.runtime.errors import PartialFailure

    scan_videos(args.paths)  # refuse missing paths and unreadable folders before loading anything
    retriever = _retriever(args)
    with Archive.open(args.db, retriever, create=True) as archive:
        summary = archive.index(args.paths, window=args.window, stride=args.stride, batch=args.batch,
                                workers=args.workers, reindex=args.reindex, progress=not args.no_progress)
    for line in summary.lines():
        print(f"hbci-index: {line}", file=sys.stderr)
    if summary.failed and args.strict:
        raise PartialFailure(f"{len(summary.failed)} of {summary.scanned} files failed (listed above)")
    return ExitCode.OK


def index_main(argv: Sequence[str] | None = None) -> int:
    return _main("hbci-index", _index_parser(), _index, argv)


# ---------------------------------------------------------------------------------------------- hbci-search
def _search_parser() -> argparse.ArgumentParser:
    from hbci.runtime.archive.search import DEFAULT_CANDIDATES

    p = argparse.ArgumentParser(prog="hbci-search", description="Search an archive by text: the best moments, "
                                "ranked by the BCI scorer.", epilog=exit_codes_epilog(SEARCH_EXIT_CODES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--query", required=True, help="the text to search for")
    p.add_argument("--top", type=int, default=10, help="moments to return (%(default)s)")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="stage one keeps this many windows for the scorer (%(default)s)")
    p.add_argument("--exact", action="store_true", help="score every window with the BCI scorer (slow)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout instead of a table")
    p.add_argument("--sheet", metavar="PNG", help="also write a contact sheet of the moments")
    return p


def _table(result) -> str:
    lines = [f"{'#':>3}  {'score':>7}  {'start':>8}  {'end':>8}  {'best window':>17}  file"]
    for i, m in enumerate(result.moments, 1):
        lines.append(f"{i:>3}  {m.score:7.4f}  {m.start:8.2f}  {m.end:8.2f}  {m.best_start:8.2f}-{m.best_end:<8.2f}  "
                     f"{m.path}")
    mode = "exact" if result.exact else f"two-stage, {result.scored} candidates"
    lines.append(f"({len(result.moments)} moments; {result.windows} windows, {mode}; "
                 f"{1000 * result.seconds['total']:.0f} ms)")
    return "\n".join(lines)


def _search(args) -> int:
    from hbci.runtime.archive.archive import Archive
    from hbci.runtime.archive.sheet import check_sheet_path

    if args.sheet:
        check_sheet_path(args.sheet)  # before any work
    with Archive.open(args.db) as archive:  # refuses a missing, empty or foreign database before the model loads
        archive.retriever = _retriever(args)
        result = archive.search(args.query, args.top, candidates=args.candidates, exact=args.exact)
        if args.sheet:
            archive.contact_sheet(result, args.sheet)
    print(json.dumps(result.to_dict()) if args.json else _table(result))
    return ExitCode.OK


def search_main(argv: Sequence[str] | None = None) -> int:
    return _main("hbci-search", _search_parser(), _search, argv)


if __name__ == "__main__":  # python -m hbci.runtime.archive.cli index|search ...
    _commands = {"index": index_main, "search": search_main}
    if len(sys.argv) < 2 or sys.argv[1] not in _commands:
        sys.exit("usage: python -m hbci.runtime.archive.cli {index,search} ...")
    sys.exit(_commands[sys.argv[1]](sys.argv[2:]))
