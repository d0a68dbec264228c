"""The embedded nats-server: own port, JetStream on, stopped by the supervisor."""

from __future__ import annotations

from urllib.parse import urlsplit

import nats
import pytest

from cli.stack import supervisor
from cli.stack.embedded_nats import start_nats
from cli.stack.ports import listens_on


@pytest.fixture
def nats_record(home):
    record = start_nats(home)
    yield record
    supervisor.stop(record)


async def test_starts_on_a_free_port_with_jetstream(nats_record, home):
    port = urlsplit(nats_record.url).port
    # A system NATS may own 4222; ours must never be mistaken for (or collide with) it.
    assert port != 4222
    assert listens_on(nats_record.pid, port)

    client = await nats.connect(nats_record.url)
    try:
        account = await client.jetstream().account_info()
        assert account.limits is not None
        # JetStream stores under NEXUS_HOME, so streams survive a restart of the stack.
        assert (home.nats / "jetstream").is_dir()
    finally:
        await client.close()


def test_stop_ends_the_server(nats_record):
    port = urlsplit(nats_record.url).port
    assert supervisor.stop(nats_record) is True
    assert not supervisor.is_alive(nats_record)
    assert not listens_on(nats_record.pid, port)
