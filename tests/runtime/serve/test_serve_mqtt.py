"""MQTT against a real broker (Debian's mosquitto on a free port of 127.0.0.1, started and stopped here):
availability, Frigate-style new/update/end messages with a stable id, standing queries set over MQTT, and a
broker restart that loses none of the events the bridge's offline queue held."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest

from tests.runtime.serve.conftest import free_port

pytest.importorskip("paho.mqtt.client", reason="the [serve] extra is not installed")
MOSQUITTO = shutil.which("mosquitto") or (shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin"))
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto broker is not installed "
                                                          "(.ci/run installs it: apt-get install -y mosquitto)")


class Broker:
    def __init__(self, folder):
        self.port, self.folder = free_port(), folder
        (folder / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\n")
        self.process = None

    def start(self):
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Subscriber:
    """A persistent session (clean_session False): the broker keeps its messages across the restart."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        self.messages, self.lock = [], threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hbci-test-subscriber",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe("hbci/#", qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()

    def _message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), message.retain))

    def wait(self, predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no such message; got {self.messages}")

    def events(self):
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == "hbci/events"]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _event(kind, **extra):
    base = {"event": kind, "id": 0, "event_id": "1700000000.000-cam-0", "query": "a dog runs", "query_index": 0,
            "source": "cam", "bundle_id": "b1", "score": 0.8, "raw_score": 0.8, "threshold": 0.76,
            "window_start": 1.0, "window_end": 4.0, "thumbnail_url": "/events/1700000000.000-cam-0/thumbnail.jpg"}
    return {**base, **extra}


def test_bridge_against_a_real_broker(tmp_path, runtime_bundle):
    from hbci.runtime.retriever import Retriever
    from hbci.runtime.serve.config import parse_config
    from hbci.runtime.serve.mqtt import MqttBridge
    from hbci.runtime.serve.service import Service

    broker = Broker(tmp_path)
    broker.start()
    config = parse_config({"sources": [{"name": "cam", "kind": "file", "target": str(tmp_path / "none.mp4")}],
                           "mqtt": {"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 0.5,
                                    "queue_size": 50}})
    service = Service(config, Retriever.load(runtime_bundle, precision="auto"))
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(config.mqtt, service, base_url="http://box:8080")
    try:
        bridge.start()
        subscriber.wait(lambda m: m[0] == "hbci/available" and m[1] == "online")
        status = json.loads(subscriber.wait(lambda m: m[0] == "hbci/cam/status")[-1][1])
        assert status["up"] is False and status["frames"] == 0  # never started here
        stats = json.loads(subscriber.wait(lambda m: m[0] == "hbci/stats")[-1][1])
        assert stats["bundle_id"] == service.retriever.bundle_id and "cam" in stats["sources"]

        service.hub.publish(_event("start"))
        subscriber.wait(lambda m: m[0] == "hbci/events")
        new = subscriber.events()[0]
        assert new["type"] == "new" and new["after"]["id"] == "1700000000.000-cam-0"
        after = new["after"]
        assert after["source"] == after["camera"] == "cam" and after["label"] == "a dog runs"
        assert after["raw_score"] == after["calibrated_score"] == 0.8 and after["calibration"] == "none"
        assert after["threshold"] == 0.76 and after["bundle_id"] == "b1" and after["end_time"] is None
        assert after["thumbnail_url"] == "http://box:8080/events/1700000000.000-cam-0/thumbnail.jpg"

        # The broker goes away: what happens meanwhile waits in the bridge's queue, in order.
        broker.stop()
        deadline = time.monotonic() + 10
        while bridge.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bridge.connected
        update = _event("update", score=0.9, raw_score=0.9, peak_raw_score=0.9, calibrated_score=0.97,
                        threshold_source="query")
        del update["threshold"]  # updates carry no threshold: the state keeps the start's
        service.hub.publish(update)
        service.hub.publish(_event("end", score=0.5, raw_score=0.5, peak_raw_score=0.9, reason="below_threshold"))
        assert [json.loads(p)["type"] for t, p, _ in bridge.queue if t == "hbci/events"] == ["update", "end"]
        broker.start()
        subscriber.wait(lambda m: m[0] == "hbci/events" and json.loads(m[1])["type"] == "end", timeout=30)
        events = subscriber.events()
        assert [e["type"] for e in events] == ["new", "update", "end"]
        update, end = events[1], events[2]
        assert update["before"] == new["after"] and update["after"]["top_score"] == 0.9
        assert update["after"]["calibrated_score"] == 0.97 and update["after"]["calibration"] == "gallery"
        assert update["after"]["threshold"] == 0.76
        assert end["before"] == update["after"] and end["after"]["end_reason"] == "below_threshold"
        assert end["after"]["id"] == new["after"]["id"] and end["after"]["end_time"] is not None
        assert bridge.dropped == 0

        # Standing queries over MQTT.
        subscriber.client.publish("hbci/cam/queries/set", json.dumps(["a red circle moves left"]), qos=1)
        subscriber.wait(lambda m: m[0] == "hbci/cam/queries" and "red circle" in m[1])
        assert [q["text"] for q in service.runner("cam").queries()] == ["a red circle moves left"]
        subscriber.client.publish("hbci/cam/queries/set", b"{not a list", qos=1)
        subscriber.wait(lambda m: m[0] == "hbci/error")
        assert [q["text"] for q in service.runner("cam").queries()] == ["a red circle moves left"]

        # A connection that dies without a goodbye (a crash, a cable): the broker publishes the last will, and
        # the bridge comes back online by itself.
        with subscriber.lock:
            subscriber.messages.clear()
        import socket

        bridge.client.socket().shutdown(socket.SHUT_RDWR)
        subscriber.wait(lambda m: m[0] == "hbci/available" and m[1] == "offline")
        subscriber.wait(lambda m: m[0] == "hbci/available" and m[1] == "online")
    finally:
        bridge.close()
        subscriber.wait(lambda m: m[0] == "hbci/available" and m[1] == "offline")
        subscriber.close()
        broker.stop()
