"""The project's errors and the one exit-code table every CLI uses (documented in docs/exit-codes.md).

Every failure a user can cause is an `HbciError` subclass with a message that names the cause; its class says
which exit code it maps to (`exit_code(exc)`), so a number means the same thing in every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable

__all__ = ["ExitCode", "ExitCodeInfo", "EXIT_CODE_TABLE", "exit_code", "internal_error", "exit_codes_epilog", "exit_codes_markdown",
           "HbciError", "VideoError", "SourceError", "BundleError", "ConfigError", "QueryError", "DatasetError",
           "OutputError", "EnginesUnavailable", "GateRefused", "PartialFailure", "DatabaseError",
           "IndexMismatchError", "ServiceError"]

EXIT_CODES_DOC = "docs/exit-codes.md"


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    SOURCE = 3
    VIDEO = 4
    OUTPUT = 5
    NO_ENGINES = 6
    GATE = 7
    PARTIAL = 8
    DATABASE = 9
    INDEX_MISMATCH = 10
    SERVICE = 11
    SIGINT = 130
    SIGTERM = 143


@dataclass(frozen=True)
class ExitCodeInfo:
    code: ExitCode
    meaning: str
    commands: tuple[str, ...]  # the commands that return it ("all": every command)


# One row per code; a number never means two things. Codes for commands still to come (the archive's hbci-index
# and hbci-search, the service's hbci-serve) are reserved here so that they use the same numbers.
EXIT_CODE_TABLE: tuple[ExitCodeInfo, ...] = (
    ExitCodeInfo(ExitCode.OK, "success (hbci-run: the source ended, or the reader of stdout went away)", ("all",)),
    ExitCodeInfo(ExitCode.INTERNAL, "unexpected internal error, a bug (hbci-run: one line, the traceback with "
                 "--log-level debug)", ("all",)),
    ExitCodeInfo(ExitCode.USAGE, "bad usage or input: arguments, configs and overrides, queries, query files, "
                 "thresholds, bundles, checkpoints, datasets", ("all",)),
    ExitCodeInfo(ExitCode.SOURCE, "a live source (camera, URL, pipeline) could not be opened, or was lost and did "
                 "not come back", ("hbci-run", "hbci-serve")),
    ExitCodeInfo(ExitCode.VIDEO, "a video file could not be read (missing, not a video, no decodable frames)",
                 ("hbci-run",)),
    ExitCodeInfo(ExitCode.OUTPUT, "an output failed: a folder or file that cannot be written (--save-clips, "
                 "--sheet), a video writer, --show without a display", ("hbci-run", "hbci-search")),
    ExitCodeInfo(ExitCode.NO_ENGINES, "TensorRT engines were required (--require-engines) but TensorRT or a GPU "
                 "is missing", ("build_engines.py",)),
    ExitCodeInfo(ExitCode.GATE, "the INT8 accuracy gate refused the quantized graph (the bundle is unchanged)",
                 ("build_engines.py",)),
    ExitCodeInfo(ExitCode.PARTIAL, "some inputs failed and were skipped, the rest was done (only where --strict "
                 "asks for it)", ("hbci-prepare", "hbci-index")),
    ExitCodeInfo(ExitCode.DATABASE, "the archive database is missing, not a database, damaged or locked",
                 ("hbci-index", "hbci-search", "hbci-serve")),
    ExitCodeInfo(ExitCode.INDEX_MISMATCH, "the archive was indexed with another bundle (hbci-index --reindex "
                 "rebuilds it)", ("hbci-index", "hbci-search", "hbci-serve")),
    ExitCodeInfo(ExitCode.SERVICE, "the service could not start (address in use, systemd notification failed)",
                 ("hbci-serve",)),
    ExitCodeInfo(ExitCode.SIGINT, "stopped by SIGINT (Ctrl-C); long-running commands drain first", ("all",)),
    ExitCodeInfo(ExitCode.SIGTERM, "stopped by SIGTERM, after draining", ("hbci-run", "hbci-serve")),
)


class HbciError(Exception):
    """Base class: the CLIs print these as one line and exit with `exit_code`, never a traceback."""

    exit_code = ExitCode.USAGE


class VideoError(HbciError):
    """A video file could not be read or yielded no frames."""

    exit_code = ExitCode.VIDEO

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SourceError(HbciError):
    """A live source (camera, stream) could not be opened or was lost for good."""

    exit_code = ExitCode.SOURCE


class BundleError(HbciError):
    """A model bundle is missing, tampered with, or of an unknown format version."""


class ConfigError(HbciError):
    """A configuration file or override is invalid (unknown key, wrong type)."""


class QueryError(HbciError):
    """A text query is empty or unusable."""


class DatasetError(HbciError):
    """A dataset's annotation files are malformed or its videos are missing."""


class OutputError(HbciError):
    """An output cannot be written or shown (clip folder, video writer, display)."""

    exit_code = ExitCode.OUTPUT


class EnginesUnavailable(HbciError):
    """TensorRT engines cannot be built here (TensorRT or a GPU is missing)."""

    exit_code = ExitCode.NO_ENGINES


class GateRefused(HbciError):
    """An accuracy gate refused a graph; nothing was written."""

    exit_code = ExitCode.GATE


class PartialFailure(HbciError):
    """Some inputs failed and were skipped (raised only where the user asked for strictness)."""

    exit_code = ExitCode.PARTIAL


class DatabaseError(HbciError):
    """An archive database is missing, not a database, damaged or locked."""

    exit_code = ExitCode.DATABASE


class IndexMismatchError(HbciError):
    """An archive index was built with another bundle than the one searching it."""

    exit_code = ExitCode.INDEX_MISMATCH


class ServiceError(HbciError):
    """The service could not start."""

    exit_code = ExitCode.SERVICE


def internal_error(prog: str, exc: BaseException, debug: bool) -> ExitCode:
    """Report a bug (an exception that is not an HbciError) as one line, the traceback only with `debug`."""
    import sys
    import traceback

    if debug:
        traceback.print_exc()
    print(f"{prog}: internal error: {type(exc).__name__}: {exc} (run with --log-level debug for details)",
          file=sys.stderr)
    return ExitCode.INTERNAL


def exit_code(exc: BaseException) -> ExitCode:
    """The documented exit code for an exception: its class's code for project errors, SIGINT for Ctrl-C,
    INTERNAL for anything else (a bug)."""
    if isinstance(exc, HbciError):
        return ExitCode(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.SIGINT
    return ExitCode.INTERNAL


def _info(code: ExitCode) -> ExitCodeInfo:
    return next(row for row in EXIT_CODE_TABLE if row.code == code)


def exit_codes_epilog(codes: Iterable[ExitCode]) -> str:
    """The "Exit codes" part of a command's --help, rendered from the table."""
    lines = ["Exit codes (every command: " + EXIT_CODES_DOC + "):"]
    lines += [f"  {int(c):<4} {_info(c).meaning}" for c in sorted(codes)]
    return "\n".join(lines)


def exit_codes_markdown() -> str:
    """The table of docs/exit-codes.md (a test checks the page holds exactly this)."""
    lines = ["| code | name | meaning | commands |", "|---:|---|---|---|"]
    for row in EXIT_CODE_TABLE:
        lines.append(f"| {int(row.code)} | `{row.code.name}` | {row.meaning} | {', '.join(row.commands)} |")
    return "\n".join(lines)
