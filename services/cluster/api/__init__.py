"""HTTP routes of the cluster service: workflows (phase 1 and every phase's status) and
clusters of node processes."""

from services.cluster.api.clusters import router as clusters_router
from services.cluster.api.workflows import router as workflows_router

routers = [workflows_router, clusters_router]
