"""One error family for the local stack, so the CLI can print any of them the same way."""


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why and quotes the log."""


class StackPartlyRunning(StackError):
    """Some recorded processes died while others still run."""
