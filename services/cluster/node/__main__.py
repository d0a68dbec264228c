"""`python -m services.cluster.node --cluster-id ... --node-id ... --role ... --rank ...`

Started by the cluster service; NEXUS_NATS_URL (and NEXUS_ARTIFACTS / NEXUS_HOME) come from its
environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid

from services.cluster.node.runtime import NodeIdentity, NodeRuntime
from shared.contracts import NodeInfo
from shared.settings import NexusSettings
from shared.telemetry import configure_logging, create_tracer_provider


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.cluster.node")
    parser.add_argument("--cluster-id", type=uuid.UUID, required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument(
        "--role", required=True, choices=["worker", "parameter_server", "validator"]
    )
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--workflow-id", type=uuid.UUID, required=True)
    parser.add_argument("--tenant-id", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address other nodes reach us on")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = NexusSettings.from_env()
    configure_logging(settings.log_level)
    provider = create_tracer_provider("node", settings.otlp_endpoint)
    info = NodeInfo(
        node_id=args.node_id, role=args.role, rank=args.rank, pid=os.getpid(), host=args.host
    )
    identity = NodeIdentity(args.cluster_id, args.workflow_id, args.tenant_id, info)
    runtime = NodeRuntime(
        identity,
        settings.nats_url,
        settings.artifacts,
        settings.heartbeat_interval_s,
        settings.node_orphan_grace_s,
    )
    code = asyncio.run(runtime.run())
    provider.shutdown()
    logging.shutdown()
    if "torch" in sys.modules or runtime.task_still_running():
        # Everything is flushed and the process group destroyed. torch's teardown takes
        # seconds on a busy machine (gloo may even abort in it), and a task thread stuck in
        # native code could hang it: leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
