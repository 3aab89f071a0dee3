"""MQTT for the service (paho-mqtt), in the layout Home Assistant users already parse from Frigate:

    <prefix>/available            "online" / "offline" (retained; "offline" is also the last will)
    <prefix>/events               {"type": "new"|"update"|"end", "before": {...}, "after": {...}}
    <prefix>/<source>/status      the source's health (retained)
    <prefix>/<source>/queries     its standing queries (retained)
    <prefix>/stats                periodic service figures
    <prefix>/<source>/queries/set and <prefix>/queries/set: a JSON list of strings sets the standing queries

Messages are published at QoS 1. While the broker is away they wait in a bounded queue (the oldest dropped when
full, and counted) and go out, in order, once it is back."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

from hbci.runtime.serve.config import require

__all__ = ["MqttBridge", "event_state"]

log = logging.getLogger("hbci")

MESSAGE_TYPES = {"start": "new", "update": "update", "end": "end"}


def event_state(event: dict, before: dict | None, base_url: str) -> dict:
    """The event's state after `event` (one of its start/update/end dicts), given the state before it."""
    state = dict(before or {})
    now = round(time.time(), 3)
    if before is None:
        state.update(id=event["event_id"], source=event["source"], camera=event["source"], query=event["query"],
                     label=event["query"], query_index=event["query_index"], bundle_id=event["bundle_id"],
                     start_time=event.get("wall_time", now), end_time=None, top_score=None, end_reason=None)
    raw = event.get("peak_raw_score") if event["event"] == "end" else event.get("raw_score")
    # calibrated_score: the score's position in the query's null distribution (the bundle's background gallery);
    # without a gallery there is none, and the raw score stands in for it (calibration "none" says so).
    calibrated = event.get("calibrated_score", state.get("calibrated_score"))
    calibration = event.get("threshold_source", state.get("threshold_source", "global"))
    state.update(score=event.get("score"), raw_score=raw,
                 calibrated_score=raw if calibrated is None else calibrated,
                 calibration="none" if calibrated is None else "gallery", threshold_source=calibration,
                 threshold=event.get("threshold", state.get("threshold")), stream_start=event.get("window_start"),
                 stream_end=event.get("window_end"),
                 top_score=max(s for s in (state.get("top_score"), event.get("peak_raw_score"), raw)
                               if s is not None),
                 thumbnail_url=(base_url + event["thumbnail_url"]) if event.get("thumbnail_url")
                 else state.get("thumbnail_url"),
                 clip_url=(base_url + event["clip_url"]) if event.get("clip_url") else state.get("clip_url"),
                 has_snapshot=bool(event.get("thumbnail_url") or state.get("thumbnail_url")),
                 has_clip=bool(event.get("clip_url") or state.get("clip_url")))
    if event["event"] == "end":
        state.update(end_time=event.get("wall_time", now), end_reason=event.get("reason"))
    return state


class MqttBridge:
    """Publishes the service's events, availability, status and stats; takes standing queries."""

    def __init__(self, config, service, *, base_url: str | None = None):
        mqtt = require("paho.mqtt.client")
        self.config, self.service, self.prefix = config, service, config.topic_prefix.rstrip("/")
        http = service.config.http
        self.base_url = base_url if base_url is not None else (http.public_url or f"http://{http.bind}:{http.port}")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or "",
                                  protocol=mqtt.MQTTv311)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        self.client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(0.5, 10)
        self.client.on_connect, self.client.on_disconnect = self._connected, self._disconnected
        self.client.on_message = self._message
        self.queue: collections.deque = collections.deque(maxlen=config.queue_size)
        self.dropped = 0
        self.connected = False
        self._states: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._unsubscribe = None
        self._last_info = None
        self._stats_thread: threading.Thread | None = None

    def topic(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])

    # ------------------------------------------------------------------------------------------ life
    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self.client.loop_start()
        self._unsubscribe = self.service.hub.subscribe(self.publish_event)
        self._stats_thread = threading.Thread(target=self._stats_loop, name="hbci-mqtt-stats", daemon=True)
        self._stats_thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Publish "offline" (retained), flush what can be flushed within `timeout`, disconnect."""
        self._closing.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._send(self.topic("available"), "offline", retain=True)
        deadline = time.monotonic() + timeout
        def pending() -> bool:
            return bool(self.queue) or (self._last_info is not None and not self._last_info.is_published())

        while self.connected and pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------------------------------ sending
    def _send(self, topic: str, payload, retain: bool = False) -> None:
        """Queue a message and publish what the queue holds while connected (in order)."""
        if not isinstance(payload, str):
            payload = json.dumps(payload)
        with self._lock:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append((topic, payload, retain))
            self._flush_locked()

    def _flush_locked(self) -> None:
        while self.queue and self.connected:
            topic, payload, retain = self.queue[0]
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:  # the connection went away meanwhile: the message stays queued
                break
            self.queue.popleft()
            self._last_info = info

    def publish_event(self, event: dict) -> None:
        kind = MESSAGE_TYPES.get(event["event"])
        if kind is None:
            return
        before = self._states.get(event["event_id"])
        after = event_state(event, before, self.base_url)
        if kind == "end":
            self._states.pop(event["event_id"], None)
        else:
            self._states[event["event_id"]] = after
            while len(self._states) > 10_000:
                self._states.popitem(last=False)
        self._send(self.topic("events"), {"type": kind, "before": before or after, "after": after})

    def publish_status(self, sources: dict | None = None) -> None:
        """Each source's status (retained); `sources`: the health figures if already taken."""
        for name, health in (sources or self.service.health()["sources"]).items():
            self._send(self.topic(name, "status"), {k: health[k] for k in (
                "up", "fps", "last_frame_age_s", "frames", "restarts", "error", "queries")}, retain=True)

    def publish_queries(self, name: str) -> None:
        self._send(self.topic(name, "queries"), self.service.runner(name).queries(), retain=True)

    def _stats_loop(self) -> None:
        while not self._closing.wait(self.config.stats_interval_s):
            stats, sources = self.service.stats(), self.service.health()["sources"]
            self._send(self.topic("stats"), {**{k: stats[k] for k in ("version", "bundle_id", "backend",
                                                                      "precision", "uptime_s")},
                                             "sources": sources,
                                             "mqtt_queue": len(self.queue), "mqtt_dropped": self.dropped})
            self.publish_status(sources)

    # ------------------------------------------------------------------------------------------ callbacks
    def _connected(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.config.host, self.config.port,
                        reason_code)
            return
        log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        client.subscribe([(self.topic("queries", "set"), 1), (self.topic("+", "queries", "set"), 1)])
        with self._lock:
            self.connected = True
            client.publish(self.topic("available"), "offline" if self._closing.is_set() else "online", qos=1,
                           retain=True)
            self._flush_locked()
        if not self._closing.is_set():
            self.publish_status()
            for name in self.service.runners:
                self.publish_queries(name)

    def _disconnected(self, client, userdata, flags, reason_code, properties=None) -> None:
        with self._lock:
            self.connected = False
        if not self._closing.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting", self.config.host, self.config.port,
                        reason_code)

    def _message(self, client, userdata, message) -> None:
        parts = message.topic[len(self.prefix) + 1:].split("/")
        names = list(self.service.runners) if parts[0] == "queries" else [parts[0]]
        try:
            texts = json.loads(message.payload)
            if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError("expected a JSON list of non-empty strings")
            for name in names:
                self.service.runner(name).set_queries([t.strip() for t in texts])
                self.publish_queries(name)
        except Exception as exc:  # a bad message is reported, never fatal
            log.warning("MQTT %s: ignored: %s", message.topic, exc)
            self._send(self.topic("error"), {"topic": message.topic, "error": str(exc)})
