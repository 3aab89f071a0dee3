"""The appliance service `hbci-serve`: one process, one pipeline per source, an HTTP API, MQTT and systemd
integration ([docs/service.md](../../docs/service.md)). Needs the `[serve]` extra."""
