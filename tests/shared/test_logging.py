"""Logs stay bounded: a message repeated in a loop is rate-limited, and a log file rotates."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from shared.telemetry import JsonLogFormatter, RepeatLimiter


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("nexus.test", logging.ERROR, __file__, 1, message, args, None)


def test_a_repeated_message_passes_a_few_times_per_window_then_reports_what_it_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("shared.telemetry.time.monotonic", lambda: clock[0])
    limiter = RepeatLimiter(burst=3, window_s=60.0)
    passed = [limiter.filter(_record("consumer %s failed", n)) for n in range(1000)]
    assert passed.count(True) == 3  # one format string, whatever its arguments
    assert limiter.filter(_record("another message"))

    clock[0] += 61.0
    after = _record("consumer %s failed", "x")
    assert limiter.filter(after)
    entry = json.loads(JsonLogFormatter().format(after))
    assert entry["suppressed"] == 997 and entry["message"] == "consumer x failed"


def test_the_log_file_rotates_by_size_and_takes_stray_output_along(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    script = (
        "import logging, sys\n"
        "from shared.telemetry import configure_logging\n"
        "configure_logging()\n"
        "for n in range(3000):  # distinct messages: the repeat limiter lets them all pass\n"
        "    logging.getLogger(f'nexus.test.{n}').info('line %d %s', n, 'x' * 40)\n"
        "print('a stray print after rotating', flush=True)\n"
        "sys.stderr.write('a crash trace\\n')\n"
    )
    env = {"NEXUS_LOG_FILE": str(log), "NEXUS_LOG_MAX_BYTES": "20000", "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True, timeout=60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2", "node.log.3"]
    assert all((tmp_path / name).stat().st_size <= 20000 for name in files)
    current = log.read_text()
    assert "a stray print after rotating" in current and "a crash trace" in current
