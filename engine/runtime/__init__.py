"""Runtime: logs, metrics, the event bus, systemd notification and worker-process supervision."""
