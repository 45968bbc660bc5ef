"""One Ray node on loopback, as a process of its own: ``python ray_node.py --head ...``.

What ``ray start --block`` does, for a multi-node cluster on one machine that stays on
127.0.0.1: ``ray start`` refuses to join a worker node in Ray's single-machine mode
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and outside that mode it swaps 127.0.0.1 for
the machine's external address. Like Ray's own ``ray.cluster_utils.Cluster``, this
starts the node's processes directly, in single-machine mode, so every node and every
connection between them stays on loopback.

It imports only Ray, so any environment with Ray runs it (a bare one included): the
node's workers run with the interpreter that runs this file. It prints one JSON line
(``node_id``, ``gcs_address``, ``dashboard_url``) once the node is up, then blocks until
SIGTERM or SIGINT and stops the node's processes. A SIGKILL of its process group ends the
node at once, as a machine that dies would.
"""

import argparse
import json
import os
import signal
import sys
import threading

LOOPBACK = "127.0.0.1"


def main(argv: list[str] | None = None) -> None:
    """Start the node, print where it is, and wait for a signal to stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", action="store_true", help="Start the head node.")
    parser.add_argument("--port", type=int, default=0, help="The head's GCS port.")
    parser.add_argument("--address", help="The head's GCS address (worker nodes).")
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--num-cpus", type=float, default=1)
    parser.add_argument("--resources", default="{}", help="Custom resources, as JSON.")
    parser.add_argument("--object-store-mib", type=int, default=256)
    parser.add_argument("--temp-dir", help="Ray's temp folder for this node.")
    parser.add_argument("--name", help="The node's name.")
    args = parser.parse_args(argv)
    if not args.head and not args.address:
        parser.error("a worker node needs --address (the head's GCS address)")

    # Single-machine mode: Ray keeps to loopback (see the module docstring).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.node
    from ray._private.parameter import RayParams

    params = RayParams(
        node_ip_address=LOOPBACK,
        node_name=args.name or LOOPBACK,
        num_cpus=args.num_cpus,
        num_gpus=0,
        resources=json.loads(args.resources),
        object_store_memory=args.object_store_mib * 1024 * 1024,
        min_worker_port=0,
        max_worker_port=0,
        temp_dir=args.temp_dir,
        include_dashboard=args.head,
        dashboard_host=LOOPBACK,
        dashboard_port=args.dashboard_port if args.head else None,
    )
    if args.head:
        params.gcs_server_port = args.port or None
    else:
        params.gcs_address = args.address
        params.node_manager_port = 0
        params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(
        params, head=args.head, shutdown_at_exit=True, spawn_reaper=True, connect_only=False
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "node_id": node.node_id,
                "gcs_address": node.gcs_address,
                "dashboard_url": f"http://{node.webui_url}" if args.head else None,
            }
        ),
        flush=True,
    )
    stop.wait()
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
