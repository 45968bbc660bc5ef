"""Shared library of the Ray AI platform.

Settings, message schemas, errors, NATS messaging, model clients (Ray handle first,
HTTP second), the Milvus store and OpenTelemetry telemetry.
"""

from handler_base.settings import Settings

__version__ = "0.1.0"

__all__ = ["Settings", "__version__"]
