"""The HTTP API in process (the ASGI app, no pipelines running): the bearer token, body limits, unknown fields,
and a bounded schemathesis fuzz of the OpenAPI schema that must find no 5xx."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def service(runtime_bundle, tmp_path_factory):
    from hbci.runtime.retriever import Retriever
    from hbci.runtime.serve.config import parse_config
    from hbci.runtime.serve.service import Service

    video = tmp_path_factory.mktemp("api") / "none.mp4"
    config = parse_config({"sources": [{"name": "cam", "kind": "file", "target": str(video)}],
                           "http": {"bind": "0.0.0.0", "token": TOKEN}})
    return Service(config, Retriever.load(runtime_bundle, precision="auto"))


@pytest.fixture(scope="module")
def app(service):
    from hbci.runtime.serve.api import create_app

    return create_app(service)


def _client(app, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    from fastapi.testclient import TestClient

    return TestClient(app, headers=headers)


def test_token_is_required_off_loopback(app):
    with _client(app, None) as client:
        response = client.get("/healthz")
        assert response.status_code == 401 and response.json()["detail"] == "missing bearer token"
    with _client(app, "wrong-token-wrong-token") as client:
        assert client.get("/openapi.json").json()["detail"] == "wrong bearer token"
    with _client(app) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["sources"]["cam"]["up"] is False


def test_queries_roundtrip_and_bad_requests(app):
    with _client(app) as client:
        added = client.post("/queries", json={"text": "a dog runs"})
        assert added.status_code == 201 and added.json()["cam"]["text"] == "a dog runs"
        assert client.put("/sources/cam/queries", json={"texts": ["a", "b"]}).json() == \
            [{"index": 1, "text": "a"}, {"index": 2, "text": "b"}]
        assert client.delete("/queries").json() == {"removed": {"cam": 2}}
        unknown = client.post("/queries", json={"text": "x", "extra": 1})
        assert unknown.status_code == 422 and "extra" in unknown.text
        from hbci.runtime.retriever import MAX_QUERY_CHARS  # the API holds queries to the runtime's limit

        assert client.post("/queries", json={"text": "x" * (MAX_QUERY_CHARS + 1)}).status_code == 422
        assert client.put("/sources/cam/queries", json={"texts": ["x" * (MAX_QUERY_CHARS + 1)]}).status_code == 422
        assert client.post("/queries", json={"text": "   "}).status_code == 422
        assert client.post("/archive/search", json={"query": "x"}).status_code == 404
        too_big = client.post("/queries", content=b"{" + b" " * 70000 + b"}",
                              headers={"content-type": "application/json"})
        assert too_big.status_code == 413
        chunked = client.post("/queries", content=iter([b'{"text": "', b"a" * 70000, b'"}']),
                              headers={"content-type": "application/json"})  # no content-length: counted
        assert chunked.status_code == 413 and "65536" in chunked.json()["detail"]
        assert client.get("/version").status_code == 200  # and the app is fine afterwards


def test_fuzz_finds_no_server_error(app):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {TOKEN}"})
    # The SSE stream never ends by itself; it is exercised end to end in test_serve_service.py.
    schema = schema.exclude(path="/events/stream")
    failures, calls = [], []
    for operation in schema.get_all_operations():
        operation = operation.ok()
        strategy = operation.as_strategy()

        @settings(max_examples=8, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            calls.append((case.method, response.status_code))
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        from hypothesis import given

        given(strategy)(check)()
    assert not failures, failures
    assert len({method for method, _ in calls}) == 4 and len(calls) > 40  # GET POST PUT DELETE, all operations


def test_event_stream_sends_every_event_published_before_the_drain_ends(runtime_bundle, tmp_path):
    """On shutdown the drain publishes the open events' "stopped" ends and then sets `stopping`: an SSE stream must
    send all of them before it closes, not stop after the first."""
    import threading
    import time

    import uvicorn

    from hbci.runtime.retriever import Retriever
    from hbci.runtime.serve.api import create_app
    from hbci.runtime.serve.config import parse_config
    from hbci.runtime.serve.service import Service

    from tests.runtime.serve.conftest import free_port

    config = parse_config({"sources": [{"name": "cam", "kind": "file", "target": str(tmp_path / "none.mp4")}]})
    service = Service(config, Retriever.load(runtime_bundle, precision="auto"))
    stopping = threading.Event()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, stopping=stopping), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    ends = [{"event": "end", "event_id": f"e-{i}", "source": "cam", "reason": "stopped"} for i in range(3)]
    try:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/events/stream", timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines) == ": connected"
            for event in ends:
                service.hub.publish(event)
            stopping.set()
            ids = [line.removeprefix("id: ") for line in lines if line.startswith("id: ")]
    finally:
        server.should_exit = True
        thread.join(10)
    assert ids == ["e-0", "e-1", "e-2"]
