from services.cluster.app import create_app
from services.cluster.settings import ClusterSettings
from shared.service_app import run_service

settings = ClusterSettings.from_env()
run_service(lambda: create_app(settings), settings)
