"""The cluster layout: one hop across nodes by handle and by HTTP, and how long a deploy takes.

Brings up the test suite's multi-node cluster on this machine (every node its own process
group, all on 127.0.0.1; :mod:`handler_base.testing.cluster`): a head from a bare
environment (Ray only) offering ``head``, and a worker from the workspace's environment
offering ``worker``, with our wheels and their dependencies on a local package index.

1. **One hop across nodes.** An ``Echo`` deployment (no model) on the worker, and a
   ``Caller`` on the head, where the handlers run. The caller times, inside its replica,
   calls to the echo through a Ray handle and through HTTP (the head's Serve proxy, what
   the handlers fall back to), interleaved one by one, ``-n`` of each: only the hop is
   timed, not the bench driver's own calls.
2. **Deploy to every application RUNNING** (``aictl deploy`` of the cpu profile in the
   cluster layout, models included): ``cold`` is the first deploy on these nodes (each
   node makes the applications' environments: a clone of its environment, then pip
   installs from the index); ``warm`` deploys the same config again after the
   applications were deleted (the nodes reuse the environments they made). The cold run
   happens once per run of this script (``n`` says so); warm ``--warm-runs`` times.

Run: ``.venv/bin/python bench/cluster.py -n 500`` (about 15 minutes on 2 cores);
``--quick`` for a smoke run (50 calls, no deploy timing).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import markdown_table, print_result, summarize
from aictl.serve_api import ServeApi, deploy_and_wait
from aictl.wheelhouse import (
    dependency_closure,
    download_wheels,
    installed_by_cluster,
    third_party,
)
from handler_base.testing.cluster import LocalCluster, bare_ray_environment
from handler_base.testing.package_index import build_wheels, package_index
from handler_base.testing.ray_fixtures import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_ENV = {"PIP_CONFIG_FILE": "/dev/null", "HF_HUB_OFFLINE": "1"}
PAYLOAD = "x" * 256


def hop_apps(serve_port: int) -> None:
    """Deploy the echo on the worker and the caller on the head (from this driver)."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1, "resources": {"worker": 0.01}})
    class Echo:
        async def __call__(self, request: Any) -> str:
            return str((await request.body()).decode())

        async def echo(self, text: str) -> str:
            return text

    @serve.deployment(ray_actor_options={"num_cpus": 0.1, "resources": {"head": 0.01}})
    class Caller:
        def __init__(self, echo: Any) -> None:
            self.echo = echo

        async def measure(self, n: int) -> dict[str, list[float]]:
            import aiohttp  # Ray's own dependency: the bare head has it

            url = f"http://{LOOPBACK}:{serve_port}/echo"
            times: dict[str, list[float]] = {"handle": [], "http": []}
            async with aiohttp.ClientSession() as http:
                for i in range(n + 20):  # the first 20 of each warm up
                    start = time.perf_counter()
                    await self.echo.echo.remote(PAYLOAD)
                    handle = time.perf_counter() - start
                    start = time.perf_counter()
                    async with http.post(url, data=PAYLOAD) as response:
                        await response.read()
                    via_http = time.perf_counter() - start
                    if i >= 20:
                        times["handle"].append(handle)
                        times["http"].append(via_http)
            return times

    echo = Echo.bind()  # type: ignore[attr-defined]
    serve.run(echo, name="echo", route_prefix="/echo")
    serve.run(Caller.bind(echo), name="caller", route_prefix="/caller")  # type: ignore[attr-defined]


def measure_hops(cluster: LocalCluster, serve_port: int, n: int) -> dict[str, Any]:
    import ray
    from ray import serve

    ray.init(address=cluster.gcs_address, namespace="bench-cluster", log_to_driver=False)
    try:
        serve.start(http_options={"host": LOOPBACK, "port": serve_port})
        hop_apps(serve_port)
        caller = serve.get_deployment_handle("Caller", app_name="caller")
        times = caller.measure.remote(n).result(timeout_s=1800)
        serve.delete("caller")
        serve.delete("echo")
    finally:
        ray.shutdown()
    handle, http = summarize(times["handle"], digits=2), summarize(times["http"], digits=2)
    return {
        "n": n,
        "handle": handle,
        "http": http,
        "http_over_handle_p50": round(http["p50_ms"] / handle["p50_ms"], 2),
    }


def deploy_config(index_url: str, serve_port: int) -> dict[str, Any]:
    from aictl.apps import StackOptions
    from aictl.render import ClusterOptions, PackageIndex, cluster_serve_config

    cluster = ClusterOptions(
        index=PackageIndex(url=index_url),
        nats_url=f"nats://{LOOPBACK}:{free_port()}",  # no NATS: the bridge is left out
        milvus_host=None,
        otlp_endpoint=None,
        http_host=LOOPBACK,
        http_port=serve_port,
    )
    stack = StackOptions(profile="cpu", layout="cluster", with_web=False, with_bridge=False)
    return cluster_serve_config(stack, cluster)


def timed_deploy(api: ServeApi, config: dict[str, Any]) -> float:
    start = time.monotonic()
    deploy_and_wait(api, config, lambda states: None, timeout_s=3600)
    return time.monotonic() - start


def delete_all(api: ServeApi) -> None:
    api.deploy({"applications": []})
    while api.applications():
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="calls of each path")
    parser.add_argument("--warm-runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="50 calls, no deploy timing")
    args = parser.parse_args()
    n = 50 if args.quick else args.n
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        with package_index(work / "index") as index:
            build_wheels(ROOT / "packages", index.directory)
            pins = third_party(dependency_closure(installed_by_cluster()))
            download_wheels(pins, index.directory)
            bare = bare_ray_environment(work / "bare", ROOT / "requirements.lock.txt")
            with LocalCluster(work / "ray", env=NODE_ENV) as cluster:
                cluster.start_head(bare, resources={"head": 1}, num_cpus=2)
                cluster.add_worker(sys.executable, "worker", resources={"worker": 1}, num_cpus=2)
                serve_port = free_port()
                hops = measure_hops(cluster, serve_port, n)
                deploys: dict[str, Any] = {}
                if not args.quick:
                    api = ServeApi(cluster.dashboard_url)
                    config = deploy_config(index.simple_url, serve_port)
                    delete_all(api)
                    deploys["cold_s"] = round(timed_deploy(api, config), 1)
                    warm = []
                    for _ in range(args.warm_runs):
                        delete_all(api)
                        warm.append(round(timed_deploy(api, config), 1))
                    deploys["warm_s"] = warm
                    api.close()
    result = {"bench": "cluster", "hop": hops, "deploy": deploys}
    rows = [[path, n, hops[path]["p50_ms"], hops[path]["p99_ms"]] for path in ("handle", "http")]
    table = markdown_table(["one hop, head -> worker", "n", "p50 ms", "p99 ms"], rows, "lrrr")
    if deploys:
        table += "\n\n" + markdown_table(
            ["deploy to all RUNNING", "runs", "seconds"],
            [
                ["cold (environments made)", 1, deploys["cold_s"]],
                ["warm (environments reused)", len(deploys["warm_s"]), deploys["warm_s"]],
            ],
            "lrr",
        )
    print_result(result, table)


if __name__ == "__main__":
    main()
