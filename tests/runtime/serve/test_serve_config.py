"""hbci-serve's config: every error is one line naming the key (and the allowed values), exit 2; the --help
epilog comes from the exit-code table; an address in use is exit 11."""

from __future__ import annotations

import socket

import pytest

from hbci.runtime.errors import ConfigError, ExitCode, exit_codes_epilog
from hbci.runtime.serve.cli import SERVE_EXIT_CODES, build_parser, main
from hbci.runtime.serve.config import parse_config

GOOD = {"sources": [{"name": "yard", "kind": "file", "target": "a.mp4"}]}


@pytest.mark.parametrize("data, words", [
    ({"sources": [{"name": "yard", "kind": "cam", "target": "0"}]},
     ["sources.0.kind", "'camera', 'file', 'url' or 'pipeline'"]),
    ({**GOOD, "colour": 1}, ["colour: unknown key", "allowed:", "sources"]),
    ({"sources": [{"name": "yard", "kind": "file", "target": "a", "treshold_on": 1}]},
     ["sources.0.treshold_on: unknown key", "threshold_on"]),
    ({**GOOD, "http": {"bind": "0.0.0.0"}}, ["http", "not loopback", "http.token"]),
    ({**GOOD, "http": {"port": 70000}}, ["http.port", "65535"]),
    ({**GOOD, "precision": "int4"}, ["precision", "'fp16'"]),
    ({"sources": []}, ["sources"]),
    ({"sources": [GOOD["sources"][0], GOOD["sources"][0]]}, ["unique", "yard"]),
    ({"sources": [{"name": "a b", "kind": "file", "target": "x"}]}, ["sources.0.name"]),
    ({**GOOD, "mqtt": {"port": 1883}}, ["mqtt.host: missing"]),
    (["not", "a", "mapping"], ["expected a mapping"]),
])
def test_config_errors_name_the_key(data, words):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "serve.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("serve.yaml: ")
    for word in words:
        assert word in message, message


def test_cli_exit_codes(tmp_path, capsys):
    assert build_parser().epilog == exit_codes_epilog(SERVE_EXIT_CODES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: yard, kind: file, target: a.mp4}\n")  # unclosed
    assert main(["--config", str(bad)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("hbci-serve: error: ") and "not valid YAML at line" in err and err.count("\n") == 1
    assert main(["--config", str(tmp_path / "none.yaml")]) == ExitCode.USAGE
    good = tmp_path / "good.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        good.write_text(f"sources: [{{name: yard, kind: file, target: a.mp4}}]\nhttp: {{port: {port}}}\n")
        assert main(["--config", str(good), "--check"]) == ExitCode.OK
        assert main(["--config", str(good)]) == ExitCode.SERVICE
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    from hbci.runtime.serve.config import load_config

    config = load_config(Path(__file__).resolve().parents[3] / "deploy" / "serve.example.yaml")
    assert [s.name for s in config.sources] == ["driveway", "dock"] and config.mqtt.topic_prefix == "hbci"


def test_a_missing_archive_is_refused_at_start(tmp_path, capsys):
    from tests.runtime.serve.conftest import free_port

    config = tmp_path / "serve.yaml"
    config.write_text(f"sources: [{{name: yard, kind: file, target: a.mp4}}]\nhttp: {{port: {free_port()}}}\n"
                      f"archive: {{location: {tmp_path / 'absent.db'}}}\n")
    assert main(["--config", str(config)]) == ExitCode.DATABASE
    assert "absent.db" in capsys.readouterr().err


@pytest.mark.parametrize("contrast", [False, True])
def test_a_source_passes_its_contrast_gate_to_its_monitor(runtime_bundle, contrast):
    from hbci.runtime.retriever import Retriever
    from hbci.runtime.serve.service import EventHub, SourceRunner

    source = {**GOOD["sources"][0], "queries": ["a red circle moves left"], "threshold_on": 0.5}
    config = parse_config({"sources": [{**source, "contrast": contrast}] if contrast else [source]})
    runner = SourceRunner(config.sources[0], Retriever.load(runtime_bundle, precision="auto"), EventHub(8), None,
                          False, lambda: None)
    monitor = runner.pipeline.monitor
    assert monitor.contrast is contrast and (monitor._opposites.pack is not None) is contrast
