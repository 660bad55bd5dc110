"""trackerdcs: shared plumbing of the trackerdcs slow-control services (MQTT contract, config, logging, health)."""

__version__ = "0.1.0"
