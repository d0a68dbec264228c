"""Command line of the model server: parse arguments, pin torch to one thread, run uvicorn."""

from __future__ import annotations

import argparse
import logging

from services.deployer.model_server.access import ModelAccess
from services.deployer.model_server.app import ModelIdentity, create_model_app
from services.deployer.model_server.batching import BatchingConfig
from services.deployer.model_server.schemas import MAX_ROWS
from shared.telemetry import configure_logging

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.deployer.model_server",
        description="Serve a saved Nexus model (model.safetensors + model-metadata.json).",
    )
    parser.add_argument("--model-dir", required=True, help="Folder or fsspec URL of the model.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model-id", default=None, help="The deployer's registry id.")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--model-version", type=int, default=None)
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=1,
        help="Rows of concurrent requests run in one forward pass (1: no batching).",
    )
    parser.add_argument(
        "--max-batch-wait-us",
        type=int,
        default=500,
        help="Under load, how long a batch short of its size waits for more requests.",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--tenant",
        help="The model's tenant: requests need its bearer token or a models:predict API key.",
    )
    who.add_argument("--public", action="store_true", help="Anyone may ask the model.")
    parser.add_argument(
        "--auth-url",
        default=None,
        help="The auth service that verifies credentials (default: NEXUS_AUTH_URL).",
    )
    parser.add_argument(
        "--precision",
        choices=["float32", "int8"],
        default="float32",
        help="int8: serve the weights dynamically quantized, in ONNX Runtime.",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if not 1 <= args.max_batch_size <= MAX_ROWS:
        parser.error(f"--max-batch-size must be between 1 and {MAX_ROWS}")
    if not 0 <= args.max_batch_wait_us <= 100_000:
        parser.error("--max-batch-wait-us must be between 0 and 100000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    import torch
    import uvicorn

    # Small MLPs gain nothing from intra-op threads, and several servers share few cores.
    torch.set_num_threads(1)
    identity = ModelIdentity(args.model_id, args.model_name, args.model_version)
    batching = BatchingConfig(args.max_batch_size, args.max_batch_wait_us / 1e6)
    access = None if args.public else ModelAccess.from_environment(args.tenant, args.auth_url)
    app = create_model_app(args.model_dir, identity, batching, access, args.precision)
    logger.info("serving %s on %s:%d", args.model_dir, args.host, args.port)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
