"""Render the applications of :mod:`aictl.apps` as a Serve config or a KubeRay RayService.

Both forms carry the same Serve config document: what ``serve deploy`` (and ``aictl up``)
applies on one machine is what a RayService's ``serveConfigV2`` holds on a cluster. On a
cluster our packages come from a private package index through each application's
``runtime_env``, in the form Ray really uses::

    runtime_env:
      pip:
        packages: ["handler-base==0.1.0", "chat-handler==0.1.0"]
        pip_install_options: ["--index-url", "https://pypi.example/simple/"]

(``pip_find_links`` of the decision record is not a Ray field: Ray accepts and ignores it,
and the packages would come from public PyPI, where anyone can own those names.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from aictl.apps import HEAD_RESOURCE, WORKER_RESOURCE, AppSpec, StackOptions, applications
from handler_base.proxy_errors import PROXY_CALLBACK, PROXY_CALLBACK_ENV

RenderFormat = Literal["serve", "rayservice"]

RAY_VERSION = "2.60.0"
"""The Ray version the platform is built and tested with (images and ``rayVersion``)."""


def platform_version() -> str:
    """The version of our packages installed here (what a release publishes)."""
    try:
        return version("handler-base")
    except PackageNotFoundError:  # pragma: no cover - the workspace always installs it
        return "0.1.0"


class PackageIndex(BaseModel):
    """Where a cluster installs our wheels from.

    Attributes:
        url: The index's simple API, e.g. ``https://git.example/api/packages/org/pypi/simple/``.
        version: The version of every package (``==``); the installed one when None.
        extra_pip_options: More pip options (``--trusted-host`` for a plain-HTTP index...).
        install_timeout_s: How long a node may take to install an application's
            packages; past it the replica fails with pip's output (Ray's
            ``setup_timeout_seconds``), instead of the application waiting for ever.
        network_timeout_s: pip's own socket timeout (``--timeout``), so an index that
            stops answering fails the install rather than stalling it.

    The index must hold our wheels and every third-party wheel they need that the node's
    image lacks: pip is told this index only (``--index-url``), so nothing comes from a
    public index where anyone can own a name. ``./dev wheelhouse`` downloads those
    third-party wheels at the pinned versions, ready to publish beside ours.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    version: str | None = None
    extra_pip_options: tuple[str, ...] = ()
    install_timeout_s: int = Field(default=600, ge=1)
    network_timeout_s: int = Field(default=20, ge=1)

    def runtime_env(self, packages: tuple[str, ...]) -> dict[str, Any]:
        """The ``runtime_env`` entries of an application that imports ``packages``."""
        pin = self.version or platform_version()
        options = ["--index-url", self.url, "--timeout", str(self.network_timeout_s)]
        return {
            "pip": {
                "packages": [f"{name}=={pin}" for name in packages],
                "pip_install_options": [*options, "--retries", "1", *self.extra_pip_options],
            },
            "config": {"setup_timeout_seconds": self.install_timeout_s},
        }


class ServeOptions(BaseModel):
    """What the Serve config says beyond the applications.

    Attributes:
        http_host: Where the Serve proxy listens (``127.0.0.1`` on one machine; ``0.0.0.0``
            in a cluster's pods).
        http_port: The proxy's port.
        env_vars: Environment of every application (NATS_URL, MILVUS_HOST, OTLP...).
        index: Install our packages from this index (clusters); None where they are
            installed already (one machine).
        apps: Only these applications (by name); all when None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    env_vars: dict[str, str] = Field(default_factory=dict)
    index: PackageIndex | None = None
    apps: tuple[str, ...] | None = None


def application_entry(app: AppSpec, options: ServeOptions) -> dict[str, Any]:
    """One entry of the Serve config's ``applications``."""
    entry: dict[str, Any] = {
        "name": app.name,
        "route_prefix": app.route_prefix,
        "import_path": app.import_path,
    }
    if app.args:
        entry["args"] = app.args
    runtime_env: dict[str, Any] = {}
    if options.index is not None and app.packages:
        runtime_env.update(options.index.runtime_env(app.packages))
    if options.env_vars:
        runtime_env["env_vars"] = dict(options.env_vars)
    if runtime_env:
        entry["runtime_env"] = runtime_env
    return entry


def serve_config(stack: StackOptions, options: ServeOptions) -> dict[str, Any]:
    """The Serve config document (``serve deploy`` / ``serveConfigV2``), validated.

    Raises:
        ValueError: The document fails Ray's ``ServeDeploySchema``, or ``options.apps``
            names an application that does not exist.
    """
    apps = applications(stack)
    if options.apps is not None:
        unknown = set(options.apps) - {app.name for app in apps}
        if unknown:
            raise ValueError(f"no such application: {', '.join(sorted(unknown))}")
        apps = [app for app in apps if app.name in options.apps]
    document = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": options.http_host, "port": options.http_port},
        "applications": [application_entry(app, options) for app in apps],
    }
    validate_serve_config(document)
    return document


def validate_serve_config(document: Mapping[str, Any]) -> None:
    """Check ``document`` with Ray's own ``ServeDeploySchema``.

    Raises:
        ValueError: What Ray rejects.
    """
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(dict(document))


class ClusterOptions(BaseModel):
    """The RayService around the Serve config (the decision record's cluster).

    Attributes:
        name: The RayService's name.
        namespace: Its namespace.
        index: Where the cluster installs our packages from.
        nats_url: NATS as the pods reach it.
        milvus_host: The Milvus server (the handlers use it instead of Milvus Lite); None
            leaves the chat handler on Milvus Lite in its node's data folder.
        otlp_endpoint: The OpenTelemetry collector (gRPC); None: no traces exported.
        http_host: Where the Serve proxy listens in the pods.
        http_port: The Serve proxy's port.
        image: The Ray image of the head (handlers, CPU).
        gpu_image: The Ray image of the GPU workers (vLLM, CUDA runtimes).
        gpu_workers: GPU worker pods (one GPU each).
        proxy_errors_shaped: The images carry handler-base, so every node's Serve proxy
            loads :mod:`handler_base.proxy_errors` and answers its own errors (a full
            queue, an unknown path, a replica that died) in the error shape. Off for
            Ray's stock images, where the proxy could not import it and would not start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "ai-inference"
    namespace: str = "ai-ml"
    index: PackageIndex = PackageIndex(url="https://pypi.internal.example/simple/")
    nats_url: str = "nats://nats.ai-ml.svc.cluster.local:4222"
    milvus_host: str | None = "milvus.ai-ml.svc.cluster.local"
    otlp_endpoint: str | None = "http://otel-collector.monitoring.svc.cluster.local:4317"
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=1, le=65535)
    image: str = f"rayproject/ray:{RAY_VERSION}-py311"
    gpu_image: str = f"rayproject/ray-llm:{RAY_VERSION}-py311-cu128"
    gpu_workers: int = Field(default=4, ge=0)
    proxy_errors_shaped: bool = False

    def env_vars(self) -> dict[str, str]:
        """What every application is told about the cluster's services."""
        env = {
            "NATS_URL": self.nats_url,
            "MILVUS_HOST": self.milvus_host,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
        }
        return {name: value for name, value in env.items() if value is not None}

    def node_env_vars(self) -> dict[str, str]:
        """The environment of the Ray containers: :meth:`env_vars`, and the proxy's hook."""
        env = self.env_vars()
        if self.proxy_errors_shaped:
            env[PROXY_CALLBACK_ENV] = PROXY_CALLBACK
        return env


def cluster_serve_config(
    stack: StackOptions, cluster: ClusterOptions, apps: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The Serve config of a cluster: installs from the index (``apps``: only these)."""
    return serve_config(
        stack,
        ServeOptions(
            http_host=cluster.http_host,
            http_port=cluster.http_port,
            env_vars=cluster.env_vars(),
            index=cluster.index,
            apps=apps,
        ),
    )


def rayservice(stack: StackOptions, cluster: ClusterOptions) -> dict[str, Any]:
    """The KubeRay RayService manifest whose ``serveConfigV2`` is :func:`serve_config`'s."""
    serve = cluster_serve_config(stack, cluster)
    env = [{"name": key, "value": value} for key, value in cluster.node_env_vars().items()]
    ports = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": 8000, "name": "serve"},
    ]
    head = {
        # The handlers, the bridge and the Serve proxy run here: no GPU, and the custom
        # resource that the handlers ask for (so they never land on a GPU worker).
        "rayStartParams": {
            "num-gpus": "0",
            "dashboard-host": "0.0.0.0",
            "resources": ray_start_resources({HEAD_RESOURCE: 1}),
        },
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": cluster.image,
                        "env": env,
                        "ports": ports,
                        "resources": {
                            "requests": {"cpu": "4", "memory": "16Gi"},
                            "limits": {"cpu": "8", "memory": "32Gi"},
                        },
                    }
                ]
            }
        },
    }
    workers = {
        "groupName": "gpu-workers",
        "replicas": cluster.gpu_workers,
        "minReplicas": 0,
        "maxReplicas": max(cluster.gpu_workers, 1),
        "rayStartParams": {"resources": ray_start_resources({WORKER_RESOURCE: 1})},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": cluster.gpu_image,
                        "env": env,
                        "resources": {
                            "requests": {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"},
                            "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "1"},
                        },
                    }
                ]
            }
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": cluster.name, "namespace": cluster.namespace},
        "spec": {
            "serveConfigV2": to_yaml(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": head,
                "workerGroupSpecs": [workers],
            },
        },
    }


def ray_start_resources(resources: Mapping[str, float]) -> str:
    """``rayStartParams.resources`` as KubeRay wants it: JSON inside a quoted string."""
    return json.dumps(json.dumps(dict(resources)))


def validate_rayservice(manifest: Mapping[str, Any], crd: Path) -> None:
    """Check a RayService against KubeRay's CRD schema and its ``serveConfigV2`` with Ray's.

    Args:
        manifest: The RayService.
        crd: KubeRay's ``ray.io_rayservices.yaml``.

    Raises:
        jsonschema.ValidationError: What the CRD rejects.
        ValueError: What Ray rejects in the Serve config, or a CRD without a ``v1``.
    """
    import jsonschema

    definition = yaml.safe_load(crd.read_text(encoding="utf-8"))
    for entry in definition["spec"]["versions"]:
        if entry["name"] == manifest["apiVersion"].split("/")[-1]:
            schema = entry["schema"]["openAPIV3Schema"]
            break
    else:
        raise ValueError(f"{crd} has no version {manifest['apiVersion']!r}")
    jsonschema.validate(dict(manifest), schema)
    validate_serve_config(yaml.safe_load(manifest["spec"]["serveConfigV2"]))


def render(
    fmt: RenderFormat, stack: StackOptions, cluster: ClusterOptions | None = None
) -> dict[str, Any]:
    """The document of ``aictl render``: a Serve config or a RayService.

    A Serve config of the gpu profile is the cluster's (``0.0.0.0``, index installs); of
    the cpu profile it is the one-machine stack's.
    """
    cluster = cluster or ClusterOptions()
    if fmt == "rayservice":
        return rayservice(stack, cluster)
    if stack.placement == "cluster":
        return cluster_serve_config(stack, cluster)
    return serve_config(stack, ServeOptions())


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (``serveConfigV2``) as literal ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def to_yaml(document: Mapping[str, Any]) -> str:
    """YAML as people write it: keys in the given order, block style."""
    return yaml.dump(
        dict(document), Dumper=_BlockStyleDumper, sort_keys=False, default_flow_style=False
    )
