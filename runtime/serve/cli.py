"""`hbci-serve --config FILE`: the appliance service (docs/service.md). Thin: parse, run `serve`, map errors to the
project's exit codes (docs/exit-codes.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from typing import Sequence

from hbci.runtime.errors import (ExitCode, HbciError, ServiceError, exit_code, exit_codes_epilog,
                                 internal_error)

__all__ = ["main", "serve", "SERVE_EXIT_CODES"]

log = logging.getLogger("hbci")

SERVE_EXIT_CODES = (ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.DATABASE, ExitCode.INDEX_MISMATCH,
                    ExitCode.SERVICE)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hbci-serve", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=exit_codes_epilog(SERVE_EXIT_CODES))
    p.add_argument("--config", required=True, help="YAML config file (docs/service.md)")
    p.add_argument("--check", action="store_true", help="validate the config and exit (0 when valid)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _warm_up(retriever) -> None:
    """One text and one video through the graphs, so the first real window is not the slow one."""
    import numpy as np

    retriever.encode_text(["warm up"])
    t, s = retriever.bundle.manifest.num_frames, retriever.bundle.manifest.image_size
    retriever.encode_video(np.zeros((1, t, s, s, 3), np.uint8), np.ones((1, t), bool))


def serve(config_path: str, stop: threading.Event | None = None, hangup: threading.Event | None = None) -> int:
    """Run the service until `stop` is set (the signal handlers set it); returns the exit code (0 after a drain).
    `hangup` set means: reload the standing queries from the config file."""
    from hbci.runtime.demo import BUNDLE_DIR
    from hbci.runtime.retriever import Retriever
    from hbci.runtime.serve.config import load_config, require
    from hbci.runtime.serve.notify import Notifier
    from hbci.runtime.serve.service import Service

    config = load_config(config_path)
    uvicorn = require("uvicorn")
    stop = stop or threading.Event()
    hangup = hangup or threading.Event()
    notifier = Notifier()
    listener = _listen(config.http.bind, config.http.port)  # address in use: exit 11 before the model loads
    try:
        retriever = Retriever.load(config.bundle or BUNDLE_DIR, backend=config.backend, precision=config.precision,
                                   threads=config.threads)  # verifies the bundle and runs its self-check
        _warm_up(retriever)
        archive = None
        if config.archive is not None:
            from hbci.runtime.archive import Archive

            archive = Archive.open(config.archive.location, retriever)
            archive.check()  # a missing, damaged or empty archive (exit 9), or another bundle's (10): refused now
        service = Service(config, retriever, archive, config_path=config_path)
        service.watchdog = notifier.watchdog
        bridge = None
        if config.mqtt is not None:
            from hbci.runtime.serve.mqtt import MqttBridge

            bridge = MqttBridge(config.mqtt, service)
            bridge.start()
        from hbci.runtime.serve.api import create_app

        drained = threading.Event()  # SSE streams end after the drain, so clients see the "stopped" ends
        app = create_app(service, stopping=drained)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3,
                                               lifespan="off"))
        http = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="hbci-http", daemon=True)
        service.start()
        http.start()
        host, port = listener.getsockname()[:2]
        log.info("hbci-serve: %d source(s), bundle %s, listening on http://%s:%d", len(service.runners),
                 retriever.bundle_id, host, port)
        notifier.ready(f"{len(service.runners)} sources, bundle {retriever.bundle_id}")
        while not stop.wait(0.5):
            if not http.is_alive():
                raise ServiceError("the HTTP server stopped")
            if hangup.is_set():
                hangup.clear()
                try:
                    counts = service.reload_queries()
                    log.info("reloaded standing queries: %s", counts)
                except HbciError as exc:
                    log.error("reload refused, queries unchanged: %s", exc)
        notifier.stopping()
        log.info("hbci-serve: draining")
        service.drain()
        drained.set()
        if bridge is not None:
            bridge.close()
        server.should_exit = True
        http.join(10)
        return ExitCode.OK
    finally:
        listener.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                        format="hbci-serve %(levelname)s: %(message)s")
    stop, hangup = threading.Event(), threading.Event()
    try:
        if args.check:
            from hbci.runtime.serve.config import load_config

            load_config(args.config)
            print(f"{args.config}: valid")
            return ExitCode.OK
        handlers = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: hangup}
        previous = {signum: signal.signal(signum, lambda *_, e=event: e.set()) for signum, event in handlers.items()}
        try:
            return serve(args.config, stop, hangup)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    except HbciError as exc:
        print(f"hbci-serve: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("hbci-serve: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except Exception as exc:
        return internal_error("hbci-serve", exc, args.log_level == "debug")


if __name__ == "__main__":
    sys.exit(main())
