from services.validator.app import create_app
from services.validator.settings import ValidatorSettings
from shared.service_app import run_service

settings = ValidatorSettings.from_env()
run_service(lambda: create_app(settings), settings)
