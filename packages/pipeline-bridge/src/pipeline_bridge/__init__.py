"""NATS to Ray Serve bridge and Kubeflow pipelines started over NATS.

* :class:`NATSBridge` (a Ray actor; :func:`start_bridges`, :func:`stop_bridges`): chat
  and voice requests over NATS answered by the Serve handlers, in core or at-least-once
  mode (:class:`BridgeConfig`). :class:`Bridge` is its event-loop part, usable alone.
* :mod:`pipeline_bridge.pipelines`: Kubeflow ingestion pipelines started over NATS.
"""

from pipeline_bridge.bridge import (
    Bridge,
    NATSBridge,
    Route,
    actor_name,
    routes_for,
    start_bridges,
    stop_bridges,
)
from pipeline_bridge.config import BridgeConfig, DeliveryMode

__version__ = "0.1.0"

__all__ = [
    "Bridge",
    "BridgeConfig",
    "DeliveryMode",
    "NATSBridge",
    "Route",
    "__version__",
    "actor_name",
    "routes_for",
    "start_bridges",
    "stop_bridges",
]
