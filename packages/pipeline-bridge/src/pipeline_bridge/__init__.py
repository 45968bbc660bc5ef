"""NATS to Ray Serve bridge and Kubeflow pipelines started over NATS.

* :class:`NATSBridge` (a Ray actor; :func:`start_bridges`, :func:`stop_bridges`): chat
  and voice requests over NATS answered by the Serve handlers, in core or at-least-once
  mode (:class:`BridgeConfig`). :class:`Bridge` is its event-loop part, usable alone.
  Its routes are data (:class:`RouteSpec`: subject, request model, client, method):
  :meth:`BridgeConfig.route_table` lists them, :attr:`BridgeConfig.routes` adds more.
* :mod:`pipeline_bridge.pipelines`: Kubeflow ingestion pipelines started over NATS.
"""

from pipeline_bridge.bridge import (
    Bridge,
    NATSBridge,
    actor_name,
    start_bridges,
    stop_bridges,
)
from pipeline_bridge.config import BridgeConfig, DeliveryMode
from pipeline_bridge.routes import Route, RouteSpec, bind_routes

__version__ = "0.1.0"

__all__ = [
    "Bridge",
    "BridgeConfig",
    "DeliveryMode",
    "NATSBridge",
    "Route",
    "RouteSpec",
    "__version__",
    "actor_name",
    "bind_routes",
    "start_bridges",
    "stop_bridges",
]
