from services.memory.app import create_app
from services.memory.settings import MemorySettings
from shared.service_app import run_service

settings = MemorySettings.from_env()
run_service(lambda: create_app(settings), settings)
