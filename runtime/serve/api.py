"""The HTTP API (FastAPI): standing queries, recent events and their SSE stream, thumbnails and clips, archive
search, health, version, stats, Prometheus metrics and the OpenAPI schema. `create_app(service)` builds it."""


import asyncio
import hmac
import json
import math

from hbci.runtime.errors import HbciError
from hbci.runtime.retriever import MAX_QUERY_CHARS  # one limit: the runtime's own
from hbci.runtime.serve.config import require

__all__ = ["create_app"]

SSE_KEEPALIVE_S = 15.0


def _finite(value):
    """JSON has no NaN or infinity: None instead (health before the first frame, etc.)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Guard:
    """ASGI middleware: the bearer token (when configured) and the request-body limit, before any route runs."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.token is not None:
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), self.token):
                reason = "missing bearer token" if not given else "wrong bearer token"
                return await _reply(send, 401, reason, [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        if length is not None:  # within the limit, and the HTTP server holds the client to it
            return await self.app(scope, receive, send)
        # A chunked body: read it here up to the limit (the framework would turn a failure while it reads into a
        # 400), then hand it on in one piece.
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await _reply(send, 413, f"request body over {self.max_body} bytes")
            if not message.get("more_body"):
                break
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str, headers=()):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def create_app(service, *, stopping=None):
    """The FastAPI application of `service` (a `hbci.runtime.serve.service.Service`). `stopping` (a
    threading.Event) ends open SSE streams when the service drains."""
    require("fastapi")
    from typing import Annotated, Optional

    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    QueryText = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]

    class QueryIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: QueryText = Field(description="a standing query")

    class QueriesIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[QueryText] = Field(max_length=256, description="the complete list of standing queries")

    class SearchIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: QueryText
        top_k: int = Field(10, ge=1, le=service.config.archive.max_top_k if service.config.archive else 100)
        exact: bool = False

    http = service.config.http
    app = FastAPI(title="hbci-serve", version=service.identity()["version"],
                  description="HBCI text-video retrieval appliance: standing queries over live sources, their "
                              "events, and archive search (docs/service.md).")
    app.add_middleware(_Guard, token=http.token, max_body=http.max_body_bytes)
    metrics_text = _metrics(service)

    @app.exception_handler(HbciError)
    async def _project_error(request: Request, exc: HbciError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def runner(name: str):
        try:
            return service.runner(name)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None

    def check_text(text: str) -> str:
        if not text.strip():
            raise HTTPException(422, "the query is blank")
        return text.strip()

    @app.get("/version", summary="package version, bundle id, back end")
    def version():
        return service.identity()

    @app.get("/healthz", summary="per source: up, last frame age, fps; back end and bundle id")
    def healthz():
        return _finite(service.health())

    @app.get("/stats", summary="monitor figures per source, archive size")
    def stats():
        return _finite(service.stats())

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    def metrics():
        return PlainTextResponse(metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/queries", summary="standing queries of every source")
    def list_all_queries():
        return {name: r.queries() for name, r in service.runners.items()}

    @app.post("/queries", status_code=201, summary="add a standing query to every source")
    def add_everywhere(query: QueryIn):
        text = check_text(query.text)
        return {name: {"index": r.pipeline.add_query(text), "text": text} for name, r in service.runners.items()}

    @app.delete("/queries", summary="remove every standing query of every source (open events end: removed)")
    def remove_everywhere():
        removed = {}
        for name, r in service.runners.items():
            removed[name] = len(r.queries())
            r.set_queries([])
        return {"removed": removed}

    @app.get("/sources", summary="the configured sources")
    def sources():
        return [{"name": s.name, "kind": s.kind, "target": s.target} for s in service.config.sources]

    @app.get("/sources/{name}/queries", summary="standing queries of one source")
    def list_queries(name: str):
        return runner(name).queries()

    @app.post("/sources/{name}/queries", status_code=201, summary="add a standing query to one source")
    def add_query(name: str, query: QueryIn):
        r, text = runner(name), check_text(query.text)
        return {"source": name, "index": r.pipeline.add_query(text), "text": text}

    @app.put("/sources/{name}/queries", summary="replace the standing queries of one source")
    def set_queries(name: str, queries: QueriesIn):
        r = runner(name)
        r.set_queries([check_text(t) for t in queries.texts])
        return r.queries()

    @app.delete("/sources/{name}/queries/{index}", summary="remove one standing query (its open event ends)")
    def remove_query(name: str, index: int):
        r = runner(name)
        try:
            r.pipeline.remove_query(index)
        except KeyError:
            raise HTTPException(404, f"source {name} has no query {index}") from None
        return {"source": name, "removed": index}

    @app.get("/events", summary="recent events, oldest first")
    def events(source: Optional[str] = None, limit: int = Query(100, ge=0, le=10000)):
        if source is not None:
            runner(source)
        return _finite(service.hub.recent(source, limit))

    @app.get("/events/stream", summary="server-sent events: one `data:` JSON event per message",
             response_class=StreamingResponse)
    async def stream(request: Request, source: Optional[str] = None):
        if source is not None:
            runner(source)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue(maxsize=1000)

        def deliver(event: dict) -> None:
            if source is None or event["source"] == source:
                loop.call_soon_threadsafe(_offer, queue, event)

        unsubscribe = service.hub.subscribe(deliver)

        def message(event: dict) -> str:
            return f"event: {event['event']}\nid: {event['event_id']}\ndata: {json.dumps(_finite(event))}\n\n"

        async def messages():
            try:
                yield ": connected\n\n"
                quiet = 0.0
                while True:
                    if stopping is not None and stopping.is_set():
                        # The drain's last events ("stopped" ends) were handed to the loop before `stopping` was
                        # set: one turn of the loop puts them in the queue; send them all before the stream ends.
                        await asyncio.sleep(0)
                        while not queue.empty():
                            yield message(queue.get_nowait())
                        return
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        quiet += 1.0
                        if quiet >= SSE_KEEPALIVE_S:  # a comment line keeps proxies from closing an idle stream
                            quiet = 0.0
                            yield ": keepalive\n\n"
                        continue
                    quiet = 0.0
                    yield message(event)
            finally:
                unsubscribe()

        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/events/{event_id}/thumbnail.jpg", response_class=FileResponse, summary="an event's thumbnail")
    def thumbnail(event_id: str):
        return _media(service, event_id, "thumbnail", "image/jpeg")

    @app.get("/events/{event_id}/clip.mp4", response_class=FileResponse, summary="an event's clip (mp4v)")
    def clip(event_id: str):
        return _media(service, event_id, "clip", "video/mp4")

    @app.post("/archive/search", summary="the best moments of the archive for a text query")
    def search(request: SearchIn):
        if service.archive is None:
            raise HTTPException(404, "no archive is configured (config key: archive.location)")
        text = check_text(request.query)
        return _finite(service.archive.search(text, request.top_k, exact=request.exact).to_dict())

    return app


def _offer(queue, event) -> None:
    if queue.full():  # a slow client loses its oldest events, never the pipeline's time
        queue.get_nowait()
    queue.put_nowait(event)


def _media(service, event_id: str, kind: str, media_type: str):
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    path = service.hub.media(event_id, kind)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no {kind} for event {event_id!r}")
    return FileResponse(path, media_type=media_type)


def _metrics(service):
    """A Prometheus registry whose collector reads the service's figures at scrape time."""
    prometheus = require("prometheus_client")
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            identity = service.identity()
            info = GaugeMetricFamily("hbci_info", "bundle and back end", labels=["bundle_id", "backend",
                                                                                 "precision", "version"])
            info.add_metric([identity["bundle_id"], identity["backend"], identity["precision"],
                             identity["version"]], 1)
            yield info
            families = {
                "up": GaugeMetricFamily("hbci_source_up", "1 while the source delivers frames", labels=["source"]),
                "fps": GaugeMetricFamily("hbci_source_fps", "frames per second of the current run",
                                         labels=["source"]),
                "age": GaugeMetricFamily("hbci_source_last_frame_age_seconds", "age of the newest frame",
                                         labels=["source"]),
                "queries": GaugeMetricFamily("hbci_standing_queries", "standing queries", labels=["source"]),
                "restarts": CounterMetricFamily("hbci_source_restarts", "source restarts", labels=["source"]),
                "frames": CounterMetricFamily("hbci_frames", "frames read in the current run", labels=["source"]),
                "windows": CounterMetricFamily("hbci_windows", "windows scored in the current run",
                                               labels=["source"]),
                "events": CounterMetricFamily("hbci_events", "events started in the current run",
                                              labels=["source"]),
            }
            for name, h in service.health()["sources"].items():
                values = {"up": float(h["up"]), "fps": h["fps"], "age": h["last_frame_age_s"],
                          "queries": h["queries"], "restarts": h["restarts"], "frames": h["frames"],
                          "windows": h["windows"], "events": h["events"]}
                for key, family in families.items():
                    if values[key] is not None:
                        family.add_metric([name], float(values[key]))
            yield from families.values()
            yield GaugeMetricFamily("hbci_event_subscribers", "SSE and MQTT subscribers",
                                    value=service.hub.subscribers)

    registry = prometheus.CollectorRegistry()
    registry.register(Collector())
    return lambda: prometheus.generate_latest(registry).decode()
