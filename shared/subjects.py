"""NATS names every process shares. Kept free of FastStream so a node process can import
them without paying for the broker library at start-up."""

STREAM_NAME = "NEXUS"

# Core-NATS (not persisted) subjects for node liveness and task dispatch.
NODE_HEARTBEAT_SUBJECT = "nodes.{cluster_id}.{node_id}.heartbeat"
NODE_TASK_SUBJECT = "nodes.{node_id}.task"
# A restarted cluster service asks a node its predecessor started to follow it instead.
NODE_ADOPT_SUBJECT = "nodes.{node_id}.adopt"
