"""The service's YAML configuration, validated with pydantic: `load_config(path)` returns a `ServiceConfig`; every
problem is one `ConfigError` line naming the key and, where there is a fixed set, the allowed values."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from hbci.runtime.errors import ConfigError

__all__ = ["load_config", "parse_config", "models", "require"]


def require(module: str):
    """Import an optional dependency of the service, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"hbci-serve needs {module.split('.')[0]} ({exc}): pip install 'hbci[serve]'") from None


@functools.lru_cache(maxsize=1)
def models():
    """The pydantic models (built on first use, so importing this module needs no optional dependency)."""
    require("pydantic")
    from typing import Literal, Optional

    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    # The allowed values are the runtime's own lists (Literal[a tuple] is Literal[its items]).
    from hbci.runtime.backends import BACKENDS
    from hbci.runtime.retriever import PRECISIONS
    from hbci.runtime.sources import SOURCE_KINDS

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Retry(Strict):
        initial_s: float = Field(1.0, gt=0, description="first wait after a source ends or is lost")
        max_s: float = Field(30.0, gt=0, description="the wait doubles up to this")

    class Source(Strict):
        name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, _ and -: used in URLs and "
                                                                       "MQTT topics")
        kind: Literal[SOURCE_KINDS]
        target: str = Field(min_length=1, description="camera index, file path, stream URL or GStreamer pipeline")
        realtime: bool = False
        max_fps: float = Field(0.0, ge=0)
        queries: list[str] = Field(default_factory=list)
        window: Optional[float] = Field(None, gt=0)
        stride: Optional[float] = Field(None, gt=0)
        smoothing: Optional[float] = Field(None, ge=0, lt=1)
        threshold_on: Optional[float] = None
        threshold_off: Optional[float] = None
        batch: int = Field(8, ge=1, le=256)
        contrast: bool = Field(False, description="the contrast gate, as hbci-run --contrast")
        retry: Retry = Field(default_factory=Retry)

        @field_validator("target")
        @classmethod
        def _target(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("must not be blank")
            return value.strip()

    class Http(Strict):
        bind: str = "127.0.0.1"
        port: int = Field(8080, ge=0, le=65535, description="0: any free port (logged)")
        token: Optional[str] = Field(None, min_length=16, description="bearer token; required off loopback")
        max_body_bytes: int = Field(65536, ge=1024)
        public_url: Optional[str] = Field(None, description="base of thumbnail/clip URLs in MQTT payloads")

        @model_validator(mode="after")
        def _token(self):
            if not is_loopback(self.bind) and not self.token:
                raise ValueError(f"bind {self.bind!r} is not loopback: set http.token (16+ characters)")
            return self

    class Mqtt(Strict):
        host: str
        port: int = Field(1883, ge=1, le=65535)
        topic_prefix: str = Field("hbci", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
        client_id: Optional[str] = None
        username: Optional[str] = None
        password: Optional[str] = None
        keepalive_s: int = Field(30, ge=5, le=3600)
        stats_interval_s: float = Field(60.0, gt=0)
        queue_size: int = Field(1000, ge=1, description="messages kept while the broker is away (oldest dropped)")

    class Archive(Strict):
        location: str = Field(min_length=1, description="embedded database path or milvus://host:port/collection")
        max_top_k: int = Field(100, ge=1, le=10000)

    class Paths(Strict):
        media: Optional[str] = Field(None, description="folder for event thumbnails and clips (none: not kept)")
        clips: bool = Field(False, description="save a clip per event under media/clips")

    class Service(Strict):
        bundle: Optional[str] = Field(None, description="model bundle folder (default: the shipped demo bundle)")
        backend: Literal[BACKENDS] = "auto"
        precision: Literal[PRECISIONS] = "auto"
        threads: int = Field(0, ge=0)
        sources: list[Source] = Field(min_length=1)
        http: Http = Field(default_factory=Http)
        mqtt: Optional[Mqtt] = None
        archive: Optional[Archive] = None
        paths: Paths = Field(default_factory=Paths)
        recent_events: int = Field(500, ge=1)

        @model_validator(mode="after")
        def _unique(self):
            names = [s.name for s in self.sources]
            duplicate = sorted({n for n in names if names.count(n) > 1})
            if duplicate:
                raise ValueError(f"source names must be unique: {', '.join(duplicate)} repeated")
            if self.paths.clips and not self.paths.media:
                raise ValueError("paths.clips needs paths.media")
            return self

    return {"Service": Service, "Source": Source, "Http": Http, "Mqtt": Mqtt, "Archive": Archive}


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _model_at(loc) -> Any:
    """The pydantic model that holds the key at `loc` (for an unknown key: which keys are allowed there)."""
    import typing

    from pydantic import BaseModel

    model = models()["Service"]
    for part in loc:
        if isinstance(part, int):
            continue
        annotation, stack = model.model_fields[part].annotation, []
        stack.append(annotation)
        while stack:
            candidate = stack.pop()
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            stack.extend(typing.get_args(candidate))
    return model


def _describe(error: dict) -> str:
    """One pydantic error as `key: problem (allowed: ...)`."""
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = ", ".join(_model_at(error["loc"][:-1]).model_fields)
        return f"{key}: unknown key (allowed: {allowed})"
    if kind == "literal_error":
        return f"{key}: {error['input']!r} is not allowed (allowed: {ctx.get('expected', '')})"
    if kind == "missing":
        return f"{key}: missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {error['input']!r})" if not isinstance(error["input"], (dict, list)) \
        else f"{key}: {message}"


def parse_config(data: Any, origin: str = "config"):
    """Validate a loaded YAML document; ConfigError with every problem on one line."""
    from pydantic import ValidationError

    Service = models()["Service"]
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with a `sources` list, got {type(data).__name__}")
    try:
        config = Service.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    return config


def load_config(path: str | os.PathLike):
    """Read and validate a YAML config file."""
    yaml = require("yaml")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, str(path))
