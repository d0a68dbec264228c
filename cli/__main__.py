"""`python -m cli` is the same as `nexus`."""

from cli.main import app

app(prog_name="nexus")
