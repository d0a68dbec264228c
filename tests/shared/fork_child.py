"""A module the fork-server tests fork children of: it says what it was given and exits."""

import os
import sys
import time


def slow_warm_up() -> None:
    """A warm-up that takes longer than any test waits for it."""
    time.sleep(60)


if __name__ == "__main__":
    print(f"stdout: argv={sys.argv[1:]} greeting={os.environ.get('GREETING')}", flush=True)
    print("stderr: still open", file=sys.stderr, flush=True)
    sys.exit(int(sys.argv[1]))
