# The stand-ins replace `shared.migrate` only: the rest of `shared` (the fork server the
# stack starts the services from) is the real package beside this test tree.
from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[4] / "shared"))
