"""The project's errors: every failure a user can cause is one of these, with a message that names the cause."""

__all__ = ["HbciError", "VideoError", "SourceError", "BundleError", "ConfigError", "QueryError", "DatasetError",
           "DatabaseError", "IndexMismatchError", "PartialFailure", "OutputError"]


class HbciError(Exception):
    """Base class: the CLIs print these as one line and exit with a documented code, never a traceback."""


class VideoError(HbciError):
    """A video file could not be read or yielded no frames."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SourceError(HbciError):
    """A live source (camera, stream) could not be opened or was lost for good."""


class BundleError(HbciError):
    """A model bundle is missing, tampered with, or of an unknown format version."""


class ConfigError(HbciError):
    """A configuration file or override is invalid (unknown key, wrong type)."""


class QueryError(HbciError):
    """A text query is empty or unusable."""


class DatasetError(HbciError):
    """A dataset's annotation files are malformed or its videos are missing."""


class PartialFailure(HbciError):
    """Some inputs failed and were skipped (raised only where the user asked for strictness)."""


class DatabaseError(HbciError):
    """An archive database is missing, not a database, damaged or locked."""


class IndexMismatchError(HbciError):
    """An archive index was built with another bundle than the one searching it."""


class OutputError(HbciError):
    """An output cannot be written or shown (clip folder, video writer, display)."""
