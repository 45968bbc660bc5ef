"""The one description of the platform's Serve applications, per profile.

Everything that deploys the platform starts here: ``aictl up`` (the cpu profile on one
machine), ``aictl render`` (a Serve config for ``serve deploy``, or a KubeRay RayService
whose ``serveConfigV2`` is the same document). An application is named once, with its
route prefix, the import path of its builder, the wheel that carries it and its builder
arguments; the renderers in :mod:`aictl.render` only change the form.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from handler_base.deployment import HandlerArgs
from ray_inference import llm
from ray_inference.catalog import MODEL_APPS
from ray_inference.llm import LLMArgs
from ray_inference.llm_gpu import gpu_application_config
from ray_inference.llm_models import DEFAULT_LLM_MODEL, llm_model
from ray_inference.profiles import Profile
from ray_inference.spec import ModelAppSpec

AppRole = Literal["model", "handler", "web"]
Layout = Literal["one-node", "cluster"]
"""``one-node``: everything on one Ray node (``aictl up``). ``cluster``: handlers, the
bridge and the web page on the head node, models on the workers, placed by the custom
resources below, which the cluster's nodes offer (the RayService's ``rayStartParams``)."""

HEAD_RESOURCE = "head"
"""The custom resource the head node offers (``--resources '{"head": 1}'``)."""
WORKER_RESOURCE = "worker"
"""The custom resource every model worker offers (``--resources '{"worker": 1}'``)."""
RESOURCE_PER_REPLICA = 0.01
"""What each replica takes of its node's placement resource: a node offering 1 holds 100."""


class AppSpec(BaseModel):
    """One Serve application.

    Attributes:
        name: The application's name (clients find its handle by it).
        route_prefix: Where the Serve proxy routes its HTTP requests.
        import_path: ``module:builder`` that Serve calls with ``args``.
        args: The builder's arguments.
        packages: Our wheels the application imports (what a cluster installs through
            ``runtime_env``); empty for applications whose code the image carries.
        role: ``model`` (GPU in the gpu profile), ``handler`` or ``web`` (CPU only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    route_prefix: str
    import_path: str
    args: dict[str, Any] = Field(default_factory=dict)
    packages: tuple[str, ...] = ()
    role: AppRole


HANDLER_SCALE: dict[Profile, dict[str, HandlerArgs]] = {
    # Only what differs from the builders' defaults is written into the Serve config.
    # One machine with 2 cores: the handlers mostly wait on the models. One llama.cpp
    # generation at a time answers about one question a second, so 2 working + 2 waiting
    # per handler keeps an admitted answer within seconds and sheds the rest at once (503,
    # Retry-After); 32 + 128 admitted everything and let the wait grow to minutes
    # (BENCHMARKS.md, "Overload"). Voice waits on the same LLM, and on Whisper and TTS too.
    "cpu": {
        "chat": HandlerArgs(num_cpus=0.1, max_ongoing_requests=2, max_queued_requests=2),
        "voice": HandlerArgs(num_cpus=0.1, max_ongoing_requests=2, max_queued_requests=2),
    },
    # The decision record's handlers: on the head node, no GPU.
    "gpu": {
        "chat": HandlerArgs(num_replicas=2, num_cpus=0.5, max_ongoing_requests=50),
        "voice": HandlerArgs(num_replicas=2, num_cpus=1, max_ongoing_requests=20),
    },
}

WEB_APP = "web"
BRIDGE_APP = "bridge"


class StackOptions(BaseModel):
    """Choices that change the rendered applications.

    Attributes:
        profile: ``cpu`` (one machine, the packaged models) or ``gpu`` (a GPU cluster).
        milvus_uri: The knowledge base the chat handler opens (a Milvus Lite file, or a
            server URL); the settings' when None.
        llm: The cpu profile's LLM, by its name in ``ray_inference.llm_models``
            (``qwen2.5-0.5b``, ``qwen2.5-1.5b``, ``smollm2-135m``).
        llm_model_id: The name the gpu profile serves the LLM as; the model's when None
            (``ray_inference.llm.LLMArgs.served_model_id``).
        llm_model_source: The Hugging Face-format model folder (or configured hub id) the
            gpu profile's vLLM loads; ray_inference's default when None.
        with_web: Include the web page (``/``); by default on one machine (cpu) only.
        with_bridge: Include the NATS bridge and pipeline service (``/bridge``).
        layout: Where the replicas go; ``one-node`` for the cpu profile and ``cluster``
            for the gpu profile when None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Profile = "cpu"
    milvus_uri: str | None = None
    llm: str = DEFAULT_LLM_MODEL
    llm_model_id: str | None = None
    llm_model_source: str | None = None
    with_web: bool | None = None
    with_bridge: bool = True
    layout: Layout | None = None

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, name: str) -> str:
        llm_model(name)  # refuses an unknown name, listing the known ones
        return name

    def gpu_llm_args(self) -> LLMArgs:
        """The gpu profile's LLM arguments (Ray Serve LLM's model and served name)."""
        return LLMArgs(
            profile="gpu", model_id=self.llm_model_id, model_source=self.llm_model_source
        )

    @property
    def placement(self) -> Layout:
        """The layout in effect."""
        if self.layout is not None:
            return self.layout
        return "one-node" if self.profile == "cpu" else "cluster"

    def placed(self, args: dict[str, Any], role: AppRole) -> dict[str, Any]:
        """``args`` with the custom resource that places ``role`` in the cluster layout."""
        if self.placement == "one-node":
            return args
        resource = WORKER_RESOURCE if role == "model" else HEAD_RESOURCE
        return {**args, "resources": {resource: RESOURCE_PER_REPLICA}}


def applications(options: StackOptions | None = None) -> list[AppSpec]:
    """Every application of the platform in ``options.profile``, models first."""
    options = options or StackOptions()
    profile = options.profile
    apps = [_model_app(spec, options) for spec in MODEL_APPS]
    chat_args = HANDLER_SCALE[profile]["chat"].model_dump(exclude_unset=True)
    if options.milvus_uri:
        chat_args["milvus_uri"] = options.milvus_uri
    if profile == "gpu":
        # Ray Serve LLM answers only the model ids it serves.
        chat_args["llm_model"] = options.gpu_llm_args().served_model_id
    elif llm_model(options.llm).judges_answerability:
        # A model that can tell whether the passages answer: check before answering.
        chat_args["rag"] = {"answer_check": True}
    apps.append(
        AppSpec(
            name="chat",
            route_prefix="/chat",
            import_path="chat_handler:build_app",
            args=options.placed(chat_args, "handler"),
            packages=("handler-base", "chat-handler"),
            role="handler",
        )
    )
    apps.append(
        AppSpec(
            name="voice",
            route_prefix="/voice",
            import_path="voice_assistant:build_app",
            args=options.placed(
                HANDLER_SCALE[profile]["voice"].model_dump(exclude_unset=True), "handler"
            ),
            packages=("handler-base", "voice-assistant"),
            role="handler",
        )
    )
    if options.with_bridge:
        apps.append(
            AppSpec(
                name=BRIDGE_APP,
                route_prefix="/bridge",
                import_path="pipeline_bridge.deployment:build_app",
                args=options.placed({}, "handler"),
                packages=("handler-base", "pipeline-bridge"),
                role="handler",
            )
        )
    if options.with_web if options.with_web is not None else profile == "cpu":
        apps.append(
            AppSpec(
                name=WEB_APP,
                route_prefix="/",
                import_path="aictl.web:build_app",
                args=options.placed({}, "web"),
                packages=("handler-base", "aictl"),
                role="web",
            )
        )
    return apps


def _model_app(spec: ModelAppSpec, options: StackOptions) -> AppSpec:
    """The application of a model spec (``ray_inference.catalog``) in ``options``."""
    if spec is llm.SPEC and options.profile == "gpu":
        entry = gpu_application_config(
            options.gpu_llm_args().gpu_engine_args(),
            name=spec.name,
            route_prefix=spec.route_prefix,
        )
        # Ray Serve LLM's builder comes with Ray itself (ray[llm] in the GPU image).
        return AppSpec(**entry, role="model")
    args: dict[str, Any] = {"profile": options.profile}
    if spec is llm.SPEC:
        args["model"] = options.llm  # the cpu profile's GGUF model, by name
    return AppSpec(
        name=spec.name,
        route_prefix=spec.route_prefix,
        import_path=spec.import_path,
        args=options.placed(args, "model"),
        # The engines and packaged models come with the model nodes' image (the cpu
        # extra's packages, or vLLM and CUDA builds): some drag dependencies that only an
        # install with overrides avoids (see the workspace's pyproject).
        packages=("handler-base", "ray-inference"),
        role="model",
    )
