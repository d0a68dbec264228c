from services.auth.app import create_app
from services.auth.settings import AuthSettings
from shared.service_app import run_service

settings = AuthSettings.from_env()
run_service(lambda: create_app(settings), settings)
