"""Every name of a workflow's generated project and memory, once.

A workflow's files lie in the artifact store under `{tenant}/{workflow}/` in the seed's
shape (`neural/configs/…`, `neural/scripts/…`); its memory keys live in the namespace named
by its id. Services, nodes and tests refer to these names, never to the strings.
"""

from __future__ import annotations

from enum import StrEnum

PROJECT_FOLDER = "neural"
CHECKPOINTS_DIR = "neural/checkpoints"
MODELS_DIR = "neural/models"


class ProjectFile(StrEnum):
    """Paths of the generated project, relative to the workflow's folder."""

    TRAINING_CONFIG = "neural/configs/training.json"
    DATASET_CONFIG = "neural/configs/dataset.json"
    MONITORING_CONFIG = "neural/configs/monitoring.json"
    ARCHITECTURE_CONFIG = "neural/configs/architecture.json"
    VALIDATION_CONFIG = "neural/configs/validation.json"
    TRAIN_SCRIPT = "neural/scripts/train.py"
    TRAIN_REQUIREMENTS = "neural/requirements-train.txt"
    BACKUP_SCRIPT = "neural/scripts/backup-checkpoints.sh"
    SERVE_SCRIPT = "neural/scripts/serve.py"
    SERVE_REQUIREMENTS = "neural/requirements.txt"
    DEPLOY_SCRIPT = "neural/scripts/deploy.sh"
    VALIDATION_SCRIPT = "neural/tests/validation.py"
    REPORT = "neural/reports/performance-report.md"
    DOCKERFILE = "neural/Dockerfile"
    DEPLOYMENT_DOC = "neural/docs/DEPLOYMENT.md"
    MODEL_METADATA = "neural/models/model-metadata.json"


def manual_report_path(validation_id: object) -> str:
    """A re-run asked for through the API keeps its own report beside phase 4's."""
    return f"neural/reports/validations/{validation_id}.md"


class MemoryKey(StrEnum):
    """Keys of a workflow's memory, by the phase that writes them."""

    # phase 1 (cluster)
    CLUSTER_ID = "neural/cluster-id"
    CONFIG = "neural/config"
    PHASE1_COMPLETE = "neural/phase1-complete"
    # phase 2 (cluster: the nodes; trainer: the network)
    NODES_DEPLOYED = "neural/nodes-deployed"
    ARCHITECTURE = "neural/architecture"
    TRAINING_SCRIPT = "neural/training-script"
    PHASE2_COMPLETE = "neural/phase2-complete"
    # phase 3 (trainer)
    TRAINING_JOB_ID = "neural/training-job-id"
    TRAINING_METRICS = "neural/training-metrics"
    MONITORING = "neural/monitoring"
    PHASE3_COMPLETE = "neural/phase3-complete"
    # phase 4 (validator)
    VALIDATION = "neural/validation"
    BENCHMARK_RESULTS = "neural/benchmark-results"
    REPORT = "neural/report"
    PHASE4_COMPLETE = "neural/phase4-complete"
    # phase 5 (deployer)
    DEPLOYMENT_READY = "neural/deployment-ready"
    DOCKERFILE = "neural/dockerfile"
    SERVE_API = "neural/serve-api"
    DEPLOY_SCRIPT = "neural/deploy-script"
    PHASE5_COMPLETE = "neural/phase5-complete"
    WORKFLOW_COMPLETE = "neural/workflow-complete"
