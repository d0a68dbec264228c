from services.validator.app import create_app
from services.validator.settings import ValidatorSettings
from shared.service_app import run_service

settings = ValidatorSettings()  # type: ignore[call-arg]
run_service(lambda: create_app(settings), settings)
