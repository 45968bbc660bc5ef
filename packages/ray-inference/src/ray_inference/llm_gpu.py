"""The gpu profile of ``/llm``: vLLM through Ray Serve LLM (``ray.serve.llm``).

Ray Serve LLM's OpenAI app serves the same routes as the cpu deployment
(``/v1/chat/completions``, ``/v1/models`` under the ``/llm`` prefix). Importing
``ray.serve.llm`` needs vLLM (checked with Ray 2.60: its protocol models come from vLLM or
SGLang), which a cluster's GPU image has and this machine has not. So the profile is kept
in two forms:

- :func:`gpu_application_config`: the Serve config entry (``import_path:
  ray.serve.llm:build_openai_app`` with its ``args``), plain data that renders and
  validates anywhere; the config dict is checked against Ray's ``LLMConfig`` model,
  which imports without vLLM.
- :func:`build_gpu_app`: the ``Application`` itself, for ``serve.run`` on a GPU node;
  it imports ``ray.serve.llm`` only when called.

The model is a Hugging Face-format model that vLLM loads: a folder on the GPU nodes
(the default, :data:`DEFAULT_GPU_MODEL_SOURCE`) or a hub id the operator configures.
Nothing here downloads.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ray_inference.profiles import DeploymentResources

GPU_BUILDER_IMPORT_PATH = "ray.serve.llm:build_openai_app"
"""The Serve builder of Ray Serve LLM's OpenAI-compatible application."""
DEFAULT_GPU_MODEL_SOURCE = "/models/Qwen2.5-7B-Instruct"
"""Where the GPU nodes keep the Hugging Face-format model (a volume or image layer):
Qwen2.5-7B-Instruct (about 15 GB in bf16, for a GPU of 24 GB or more). Configure another
with ``model_source`` (and ``model_id``)."""
DEFAULT_GPU_MODEL_ID = "qwen2.5-7b-instruct"
"""The name the default gpu model is served as."""
GPU_MEMORY_UTILIZATION = 0.85
"""Share of the GPU's memory vLLM may take (of the 0.95 GPU the replica holds)."""


class GPUEngineArgs(BaseModel):
    """How vLLM runs the model.

    Attributes:
        model_id: The name clients send as ``model`` (and ``/v1/models`` lists).
        model_source: A Hugging Face-format model folder, or a hub id (then the cluster
            must be allowed to download it).
        max_model_len: Context length in tokens.
        gpu_memory_utilization: Share of the GPU's memory vLLM may take.
        engine_kwargs: Further vLLM engine arguments.
        deployment: The server deployment's share of a GPU, replicas and queue limits
            (the gpu profile's of ``ray_inference.llm.LLMArgs``, with its overrides).
    """

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1)
    model_source: str = Field(default=DEFAULT_GPU_MODEL_SOURCE, min_length=1)
    max_model_len: int = Field(default=2048, ge=16)
    gpu_memory_utilization: float = Field(default=GPU_MEMORY_UTILIZATION, gt=0, le=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    deployment: DeploymentResources


def gpu_llm_config(args: GPUEngineArgs) -> dict[str, Any]:
    """The ``LLMConfig`` of the model, as plain data (one entry of ``llm_configs``).

    The deployment takes its share of a GPU as a placement group bundle (Ray Serve LLM's
    way of giving the engine a fractional GPU), and its request limits.
    """
    profile = args.deployment
    return {
        "model_loading_config": {"model_id": args.model_id, "model_source": args.model_source},
        "engine_kwargs": {
            "max_model_len": args.max_model_len,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            **args.engine_kwargs,
        },
        "placement_group_config": {
            "bundles": [{"CPU": profile.num_cpus, "GPU": profile.num_gpus}],
        },
        "deployment_config": {
            "num_replicas": profile.num_replicas,
            "max_ongoing_requests": profile.max_ongoing_requests,
            "max_queued_requests": profile.max_queued_requests,
            "backpressure_config": {"retry_after_s": profile.retry_after_s},
        },
    }


def gpu_builder_args(args: GPUEngineArgs) -> dict[str, Any]:
    """The ``args`` of :data:`GPU_BUILDER_IMPORT_PATH` (Ray's ``LLMServingArgs``).

    Raises:
        ValueError: When Ray's ``LLMConfig`` rejects the config.
    """
    llm_config = gpu_llm_config(args)
    _validate_llm_config(llm_config)
    return {"llm_configs": [llm_config]}


def gpu_application_config(
    args: GPUEngineArgs, *, name: str = "llm", route_prefix: str = "/llm"
) -> dict[str, Any]:
    """One application entry of a Serve config (``applications:`` of ``serve deploy``)."""
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": GPU_BUILDER_IMPORT_PATH,
        "args": gpu_builder_args(args),
    }


def build_gpu_app(args: GPUEngineArgs) -> Any:
    """The Ray Serve LLM application itself (needs vLLM; for a GPU node).

    Raises:
        ImportError: Where vLLM is not installed; the message says what to do.
    """
    try:
        from ray.serve.llm import build_openai_app
    except ImportError as exc:
        raise ImportError(
            "the gpu profile of /llm runs vLLM through Ray Serve LLM, which is not "
            f"installed here ({exc}); install `ray[llm]` on the GPU workers, or deploy "
            "the rendered config (ray_inference.llm_gpu.gpu_application_config)"
        ) from exc
    return build_openai_app(gpu_builder_args(args))


def _validate_llm_config(llm_config: dict[str, Any]) -> None:
    """Check the config with Ray's own ``LLMConfig`` model (it imports without vLLM)."""
    try:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    except ImportError:  # pragma: no cover - a Ray without the llm extra's config module
        return
    LLMConfig.model_validate(llm_config)
