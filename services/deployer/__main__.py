from services.deployer.app import create_app
from services.deployer.settings import DeployerSettings
from shared.service_app import run_service

settings = DeployerSettings.from_env()
run_service(lambda: create_app(settings), settings)
