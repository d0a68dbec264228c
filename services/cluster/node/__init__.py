"""The node process: a long-lived worker the cluster service starts (see docs/architecture.md,
"node protocol"). It registers over JetStream, heartbeats on core NATS, and runs tasks it is
sent on `nodes.{node_id}.task` in a worker thread."""
