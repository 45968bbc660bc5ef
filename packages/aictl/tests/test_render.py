"""The one description of the applications, rendered for one machine and for a cluster.

Both forms are checked with Ray's own ServeDeploySchema; the RayService also with the
KubeRay CRD schema in ../shared/kuberay (a data file of the kuberay project, read in place,
never copied into the repository: see :func:`kuberay_crd` for where it is looked for).
"""

import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from aictl.apps import StackOptions, applications
from aictl.cli import app as cli
from aictl.render import (
    ClusterOptions,
    PackageIndex,
    ServeOptions,
    render,
    serve_config,
    to_yaml,
    validate_rayservice,
    validate_serve_config,
)
from ray_inference.catalog import MODEL_APPS as MODEL_SPECS

MODEL_APPS = tuple(spec.name for spec in MODEL_SPECS)
REPO = Path(__file__).resolve().parents[3]
CRD_IN_SHARED = Path("shared") / "kuberay" / "ray.io_rayservices.yaml"
CRD_ENV = "KUBERAY_CRD"
INDEX = "https://pypi.internal.example/simple/"


def kuberay_crd() -> Path | None:
    """The RayService CRD: ``$KUBERAY_CRD``, else in ``../shared`` beside this checkout or
    beside the one it was cloned from (CI tests a clean clone of the working repository)."""
    if os.environ.get(CRD_ENV):
        return Path(os.environ[CRD_ENV])
    checkouts = [REPO]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():  # a local clone's origin is a folder
        checkouts.append(Path(origin).resolve())
    for checkout in checkouts:
        if (checkout.parent / CRD_IN_SHARED).is_file():
            return checkout.parent / CRD_IN_SHARED
    return None


CRD = kuberay_crd()


def by_name(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in config["applications"]}


def test_cpu_config_is_every_app_on_loopback_without_installs() -> None:
    config = render("serve", StackOptions(profile="cpu"))
    apps = by_name(config)
    assert list(apps) == [*MODEL_APPS, "chat", "voice", "bridge", "web"]
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    assert {name: entry["route_prefix"] for name, entry in apps.items()} == {
        **{name: f"/{name}" for name in MODEL_APPS},
        "chat": "/chat",
        "voice": "/voice",
        "bridge": "/bridge",
        "web": "/",
    }
    # One node: nothing is placed by custom resources.
    assert all("resources" not in entry.get("args", {}) for entry in apps.values())
    assert all("runtime_env" not in entry for entry in apps.values())
    assert apps["llm"]["import_path"] == "ray_inference.llm:build_app"
    assert apps["chat"]["args"]["num_cpus"] < 0.5


def test_cpu_handlers_shed_past_two_working_and_two_waiting() -> None:
    # One LLM generation at a time: past 2 + 2 a chat or voice request is shed at once
    # rather than queued for minutes (BENCHMARKS.md, "Overload"). The Serve config and the
    # RayService carry the same limits, and the builders take them.
    from handler_base.deployment import build_application

    manifest = render(
        "rayservice",
        StackOptions(profile="cpu"),
        ClusterOptions(index=PackageIndex(url=INDEX, version="1.2.3")),
    )
    rendered = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    for config in (render("serve", StackOptions(profile="cpu")), rendered):
        apps = by_name(config)
        for name in ("chat", "voice"):
            args = apps[name]["args"]
            assert (args["max_ongoing_requests"], args["max_queued_requests"]) == (2, 2)
            bound = build_application(apps[name]["import_path"], args)._bound_deployment
            # Serve's own limits stay above the guard's: twice working + waiting.
            assert (bound.max_ongoing_requests, bound.max_queued_requests) == (8, 8)


def test_the_proxys_error_hook_is_rendered_only_for_images_that_carry_it() -> None:
    from handler_base.proxy_errors import PROXY_CALLBACK, PROXY_CALLBACK_ENV, proxy_middlewares

    def node_envs(cluster: ClusterOptions) -> list[dict[str, str]]:
        manifest = render("rayservice", StackOptions(profile="gpu"), cluster)
        spec = manifest["spec"]["rayClusterConfig"]
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        return [
            {e["name"]: e["value"] for e in c["env"]}
            for g in groups
            for c in g["template"]["spec"]["containers"]
        ]

    stock = node_envs(ClusterOptions(index=PackageIndex(url=INDEX)))
    assert stock
    assert all(PROXY_CALLBACK_ENV not in env for env in stock)
    shaped = node_envs(ClusterOptions(index=PackageIndex(url=INDEX), proxy_errors_shaped=True))
    assert [env[PROXY_CALLBACK_ENV] for env in shaped] == [PROXY_CALLBACK] * len(shaped)
    # What Serve's proxy imports and calls from that path.
    module, function = PROXY_CALLBACK.split(":")
    assert function == proxy_middlewares.__name__
    assert module == proxy_middlewares.__module__


def test_gpu_rayservice_keeps_the_decision_records_layout() -> None:
    manifest = render(
        "rayservice",
        StackOptions(profile="gpu"),
        ClusterOptions(index=PackageIndex(url=INDEX, version="1.2.3")),
    )
    assert manifest["kind"] == "RayService"
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    apps = by_name(serve)
    assert "web" not in apps
    # The LLM through Ray Serve LLM (vLLM) with 0.95 GPU.
    llm = apps["llm"]
    assert llm["import_path"] == "ray.serve.llm:build_openai_app"
    bundle = llm["args"]["llm_configs"][0]["placement_group_config"]["bundles"][0]
    assert bundle["GPU"] == pytest.approx(0.95)
    # Handlers: 0 GPU, the decision record's replicas, CPUs and concurrency.
    # Handlers: 0 GPU, the decision record's replicas, CPUs and concurrency, on the head.
    on_head = {"resources": {"head": 0.01}}
    assert apps["chat"]["args"] == {
        "num_replicas": 2,
        "num_cpus": 0.5,
        "max_ongoing_requests": 50,
        # The gpu profile's model (a Qwen2.5-7B-Instruct folder), by its served name.
        "llm_model": "qwen2.5-7b-instruct",
        **on_head,
    }
    assert apps["voice"]["args"] == {
        "num_replicas": 2,
        "num_cpus": 1,
        "max_ongoing_requests": 20,
        **on_head,
    }
    assert apps["bridge"]["args"] == on_head
    assert apps["bridge"]["import_path"] == "pipeline_bridge.deployment:build_app"
    for name in ("chat", "voice"):
        env = apps[name]["runtime_env"]
        assert env["pip"]["packages"] == [
            "handler-base==1.2.3",
            f"{name}-{'handler' if name == 'chat' else 'assistant'}==1.2.3",
        ]
        # Ray's own form of a private index (pip_find_links would be ignored).
        assert env["pip"]["pip_install_options"][:2] == ["--index-url", INDEX]
        assert "pip_find_links" not in env
        # An install that cannot finish fails the replica with pip's output, in time.
        assert env["config"]["setup_timeout_seconds"] == 600
        assert "--timeout" in env["pip"]["pip_install_options"]
        assert set(env["env_vars"]) == {"NATS_URL", "MILVUS_HOST", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    # The resources the replicas are placed by, offered in KubeRay's quoted-JSON form.
    assert head["rayStartParams"]["resources"] == '"{\\"head\\": 1}"'
    worker = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["rayStartParams"]["resources"] == '"{\\"worker\\": 1}"'
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_gpu_model_apps_get_their_gpu_fractions_from_the_profile() -> None:
    expected = {"whisper": 0.5, "tts": 0.5, "embeddings": 0.8, "reranker": 0.8, "llm": 0.95}
    assert {spec.name: spec.resources("gpu").num_gpus for spec in MODEL_SPECS} == expected
    apps = {app.name: app for app in applications(StackOptions(profile="gpu"))}
    for name in ("whisper", "tts", "embeddings", "reranker"):
        assert apps[name].args == {"profile": "gpu", "resources": {"worker": 0.01}}


def test_cluster_layout_places_handlers_on_the_head_and_models_on_workers() -> None:
    config = render("serve", StackOptions(profile="cpu", layout="cluster", with_web=True))
    apps = by_name(config)
    placed = {name: entry["args"]["resources"] for name, entry in apps.items()}
    assert placed == {
        **{name: {"worker": 0.01} for name in MODEL_APPS},
        **{name: {"head": 0.01} for name in ("chat", "voice", "bridge", "web")},
    }
    # The builders take the field: each app builds with it.
    from chat_handler import build_app as build_chat
    from ray_inference.embeddings import build_app as build_embeddings

    chat = build_chat(apps["chat"]["args"])
    assert (chat._bound_deployment.ray_actor_options or {})["resources"] == {"head": 0.01}
    embeddings = build_embeddings(apps["embeddings"]["args"])
    assert (embeddings._bound_deployment.ray_actor_options or {})["resources"] == {"worker": 0.01}


def test_placement_check_names_the_resource_no_node_offers() -> None:
    from aictl.serve_api import missing_placement

    config = render("serve", StackOptions(profile="cpu", layout="cluster"))
    head_only = [{"CPU": 2.0, "head": 1.0}]
    problem = missing_placement(config, head_only)
    assert problem is not None
    assert "'worker'" in problem
    assert "embeddings" in problem
    assert "'head'" not in problem
    assert missing_placement(config, [*head_only, {"CPU": 2.0, "worker": 1.0}]) is None
    assert missing_placement(render("serve", StackOptions(profile="cpu")), []) is None


def test_serve_config_validates_with_rays_schema_and_rejects_nonsense() -> None:
    config = render("serve", StackOptions(profile="gpu"))
    validate_serve_config(config)
    broken = {**config, "applications": [{**config["applications"][0], "route_prefix": 5}]}
    with pytest.raises(ValueError, match="route_prefix"):
        validate_serve_config(broken)


def test_only_named_apps_are_rendered_and_unknown_names_are_refused() -> None:
    config = serve_config(StackOptions(), ServeOptions(apps=("chat",)))
    assert [entry["name"] for entry in config["applications"]] == ["chat"]
    with pytest.raises(ValueError, match="no such application: nope"):
        serve_config(StackOptions(), ServeOptions(apps=("nope",)))


@pytest.mark.skipif(
    CRD is None,
    reason=f"the KubeRay CRD is not in ../{CRD_IN_SHARED} beside this checkout or its origin "
    f"(set {CRD_ENV})",
)
def test_rayservice_validates_against_the_kuberay_crd() -> None:
    assert CRD is not None
    manifest = render("rayservice", StackOptions(profile="gpu"))
    validate_rayservice(manifest, CRD)
    broken = {**manifest, "spec": {**manifest["spec"], "serveConfigV2": 42}}
    with pytest.raises(jsonschema.ValidationError):
        validate_rayservice(broken, CRD)


def test_yaml_round_trips_and_keeps_the_serve_config_readable() -> None:
    manifest = render("rayservice", StackOptions(profile="gpu"))
    text = to_yaml(manifest)
    assert yaml.safe_load(text) == manifest
    assert "serveConfigV2: |" in text


def test_render_command_writes_the_documents(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["render", "--profile", "cpu", "--format", "serve"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == render("serve", StackOptions(profile="cpu"))
    out = tmp_path / "rayservice.yaml"
    result = runner.invoke(
        cli,
        [
            "render",
            "--profile",
            "gpu",
            "--format",
            "rayservice",
            "--index-url",
            INDEX,
            "--version",
            "2.0.0",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(out.read_text())
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert by_name(serve)["chat"]["runtime_env"]["pip"]["packages"][1] == "chat-handler==2.0.0"
    result = runner.invoke(cli, ["render", "--profile", "tpu"])
    assert result.exit_code != 0


def test_the_cpu_llm_is_chosen_by_name_and_an_unknown_one_is_refused() -> None:
    runner = CliRunner()
    default = by_name(render("serve", StackOptions(profile="cpu")))["llm"]
    assert default["args"] == {"profile": "cpu", "model": "qwen2.5-0.5b"}
    result = runner.invoke(cli, ["render", "--llm", "qwen2.5-1.5b"])
    assert result.exit_code == 0, result.output
    chosen = by_name(yaml.safe_load(result.stdout))["llm"]
    assert chosen["args"] == {"profile": "cpu", "model": "qwen2.5-1.5b"}
    # What is rendered is what the builder takes.
    spec = next(spec for spec in MODEL_SPECS if spec.name == "llm")
    assert spec.build_app(chosen["args"])._bound_deployment.name == spec.service.deployment
    # SmolLM2 stays selectable.
    result = runner.invoke(cli, ["render", "--llm", "smollm2-135m"])
    assert by_name(yaml.safe_load(result.stdout))["llm"]["args"]["model"] == "smollm2-135m"
    refused = runner.invoke(cli, ["render", "--llm", "llama-70b"])
    assert refused.exit_code != 0
    assert "known are smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b" in refused.output
    # aictl up refuses it the same way, before it starts anything.
    refused = runner.invoke(cli, ["up", "--llm", "llama-70b"])
    assert refused.exit_code == 1
    assert "known are smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b" in refused.output
    # The gpu profile serves a model folder with vLLM: --llm does not apply there.
    gpu = runner.invoke(cli, ["render", "--profile", "gpu", "--llm", "qwen2.5-1.5b"])
    assert gpu.exit_code != 0
    assert "cpu profile" in gpu.output


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("layout", ["one-node", "cluster"])
def test_each_model_spec_renders_its_application(profile: Any, layout: Any) -> None:
    apps = {app.name: app for app in applications(StackOptions(profile=profile, layout=layout))}
    for spec in MODEL_SPECS:
        app = apps[spec.name]
        assert (app.route_prefix, app.role) == (spec.route_prefix, "model")
        if spec.name == "llm" and profile == "gpu":
            # Ray Serve LLM's builder, from the LLM spec's own arguments.
            assert app.import_path == "ray.serve.llm:build_openai_app"
            continue
        assert app.import_path == spec.import_path == f"ray_inference.{spec.name}:build_app"
        # What is rendered is what the builder takes.
        bound = spec.build_app(app.args)._bound_deployment
        assert bound.name == spec.service.deployment
        assert (bound.ray_actor_options or {})["num_gpus"] == spec.resources(profile).num_gpus


def test_a_model_that_judges_answerability_gets_the_chats_check() -> None:
    from chat_handler.deployment import ChatArgs

    def chat_args(llm: str) -> dict[str, Any]:
        args: dict[str, Any] = by_name(render("serve", StackOptions(llm=llm)))["chat"]["args"]
        ChatArgs.model_validate(args)  # what is rendered is what the chat builder takes
        return args

    assert chat_args("qwen2.5-1.5b")["rag"] == {"answer_check": True}
    assert "rag" not in chat_args("qwen2.5-0.5b")  # it says no to every question
    assert "rag" not in chat_args("smollm2-135m")
