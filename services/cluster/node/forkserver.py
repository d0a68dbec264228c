"""`python -m services.cluster.node.forkserver`: the warm start of node processes.

A fresh interpreter spends seconds importing torch before a node can register. This process
imports torch and the node's code once, then forks every node the cluster service asks for
from itself: a node is up in milliseconds, and the pages of torch it never writes stay shared
between all of them (copy-on-write), so ten nodes cost far less memory than ten imports.

Protocol, one JSON object per line: the service writes `{"argv": [...], "env": {...},
"log": path}` on stdin (the node's `python -m services.cluster.node` arguments, its whole
environment, the file its output goes to); this process forks, answers `{"pid": n}` on stdout
and takes the next request. It exits when stdin closes — the service is gone — and the nodes
it forked go on, each in its own session, following the service by the pid it was given.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

READY = {"ready": True}


def main() -> int:
    # What every node imports; imported before the first fork, not after each.
    from services.cluster.node.rendezvous import prewarm_training_stack

    prewarm_training_stack()
    import services.cluster.node.__main__  # noqa: F401

    # The kernel reaps the nodes that end: this process never waits on them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _answer(READY)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            argv, env, log = list(request["argv"]), dict(request["env"]), str(request["log"])
        except (ValueError, KeyError, TypeError) as exc:
            _answer({"error": f"bad request: {exc!r}"})
            continue
        pid = os.fork()
        if pid == 0:
            _run_node(argv, env, log)  # never returns
        _answer({"pid": pid})
    return 0


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run_node(argv: list[str], env: dict[str, str], log: str) -> None:
    """In the forked child: become the node as `python -m services.cluster.node` would."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the node waits on its own children
        os.setsid()  # a Ctrl-C meant for the service does not reach the node
        output = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.close(nothing)
        os.environ.clear()
        os.environ.update(env)
        from services.cluster.node.__main__ import main as node_main

        code = node_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
