"""The appliance service `hbci-serve`: one process, one pipeline per source, an HTTP API, MQTT and systemd
integration ([docs/service.md](../../docs/service.md)). Needs the `[serve]` extra."""

__all__: list[str] = []  # the modules are the API: config, service, api, mqtt, notify, cli
