"""The bridge's routes as data: which NATS subject is answered by which client call.

A :class:`RouteSpec` is one entry of the route table: requests on ``subject`` are parsed
as ``request_model`` and answered by ``client(settings).<method>(request)``, whose
pydantic result is the reply. :meth:`BridgeConfig.route_table
<pipeline_bridge.config.BridgeConfig.route_table>` lists the platform's routes (chat and
voice) and any added in :attr:`BridgeConfig.routes
<pipeline_bridge.config.BridgeConfig.routes>`; in a Serve config the types are import
paths::

    routes:
      - name: echo
        subject: tools.echo
        request_model: my_tools.messages:EchoRequest
        client: my_tools.clients:EchoClient
        method: echo

:func:`bind_routes` makes the clients and gives the :class:`Route` objects the
:class:`~pipeline_bridge.bridge.Bridge` serves.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ImportString,
    field_serializer,
    model_validator,
)

from handler_base.clients import ServiceClient
from handler_base.settings import Settings


class RouteSpec(BaseModel):
    """One NATS route of the bridge, as data.

    Attributes:
        name: Short name for logs and spans (``chat``, ``voice``).
        subject: The NATS subject served.
        request_model: The request message model (a pydantic model, or its import path
            ``module:Name``).
        client: The :class:`~handler_base.clients.ServiceClient` class that forwards the
            request (or its import path); one is made per class, from the bridge's
            settings.
        method: The client's ``async`` method called with the request; it returns the
            reply (a pydantic model) or raises a ``PlatformError``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    subject: str = Field(pattern=r"^[^\s*>]+$")
    request_model: ImportString[type[BaseModel]]
    client: ImportString[type[ServiceClient]]
    method: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _method_is_async(self) -> Self:
        call = getattr(self.client, self.method, None)
        if self.method.startswith("_") or not inspect.iscoroutinefunction(call):
            raise ValueError(
                f"{self.client.__qualname__}.{self.method} is not a public async method"
            )
        return self

    @field_serializer("request_model", "client", when_used="json")
    def _import_path(self, value: type) -> str:
        """``module:Name``, the form of a Serve config's ``import_path``."""
        return f"{value.__module__}:{value.__qualname__}"


@dataclass(frozen=True)
class Route:
    """One subject the bridge serves and the call that answers it (a bound :class:`RouteSpec`).

    Attributes:
        name: Short name for logs and spans (``chat``, ``voice``).
        subject: The NATS subject.
        request_type: The request message model.
        call: ``async def call(request) -> reply``.
    """

    name: str
    subject: str
    request_type: type[BaseModel]
    call: Callable[[Any], Awaitable[BaseModel]]


def bind_routes(
    specs: Iterable[RouteSpec], settings: Settings
) -> tuple[list[Route], list[ServiceClient]]:
    """The routes to serve, and the clients made for them (close them when done).

    Routes that name the same client class share one client.
    """
    clients: dict[type[ServiceClient], ServiceClient] = {}
    routes = []
    for spec in specs:
        client = clients.get(spec.client)
        if client is None:
            client = clients[spec.client] = spec.client(settings)
        routes.append(
            Route(spec.name, spec.subject, spec.request_model, getattr(client, spec.method))
        )
    return routes, list(clients.values())
