from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.service_app import run_service

settings = TrainerSettings.from_env()
run_service(lambda: create_app(settings), settings)
