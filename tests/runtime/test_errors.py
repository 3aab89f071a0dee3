"""Tests for runtime/errors.py: one exit-code table (no number with two meanings), the docs page holds it, error
classes map to their codes, and the commands' --help epilogs are rendered from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbci.runtime import errors
from hbci.runtime.errors import EXIT_CODE_TABLE, ExitCode, exit_code, exit_codes_epilog, exit_codes_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def test_every_code_has_exactly_one_row():
    codes = [row.code for row in EXIT_CODE_TABLE]
    assert sorted(codes) == sorted(ExitCode) and len(set(codes)) == len(codes)
    assert len({int(c) for c in ExitCode}) == len(ExitCode)  # no alias: a number never means two things


def test_the_docs_page_holds_the_table():
    assert exit_codes_markdown() in DOC.read_text()


@pytest.mark.parametrize("exc, code", [
    (errors.VideoError("x.mp4", "file not found"), 4), (errors.SourceError("camera 9"), 3),
    (errors.BundleError("b"), 2), (errors.ConfigError("c"), 2), (errors.QueryError("q"), 2),
    (errors.DatasetError("d"), 2), (errors.OutputError("o"), 5), (errors.EnginesUnavailable("e"), 6),
    (errors.GateRefused("g"), 7), (errors.PartialFailure("p"), 8), (errors.DatabaseError("db"), 9),
    (errors.IndexMismatchError("i"), 10), (errors.ServiceError("s"), 11), (KeyboardInterrupt(), 130),
    (RuntimeError("bug"), 1),
])
def test_exit_code_of_each_error(exc, code):
    assert exit_code(exc) == code


def test_errors_defined_elsewhere_keep_their_codes():
    from hbci.calibration.gate import GateFailed
    from hbci.calibration.quantize import CalibrationError

    assert exit_code(GateFailed("refused", {})) == ExitCode.GATE
    assert exit_code(CalibrationError("bad method")) == ExitCode.USAGE


def test_help_epilogs_come_from_the_table():
    from hbci.runtime.cli import EXIT_CODES, build_parser

    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 130, 143}
    epilog = build_parser().epilog
    assert epilog == exit_codes_epilog(EXIT_CODES) and "docs/exit-codes.md" in epilog
    assert "  4    a video file could not be read" in epilog
