"""Stand-in for `python -m shared.migrate`: proves the URL it is given reaches Postgres."""

import asyncio
import os
import sys
import time

import asyncpg


async def main() -> None:
    url = os.environ["NEXUS_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table if not exists stub_migrated (at timestamptz)")
        await conn.execute("insert into stub_migrated values (now())")
    finally:
        await conn.close()


if os.environ.get("NEXUS_STUB_MIGRATE_FAIL"):
    print("migration failed: told to by NEXUS_STUB_MIGRATE_FAIL", flush=True)
    sys.exit(2)
# A migration slower than the services' start: they must still wait for it.
time.sleep(float(os.environ.get("NEXUS_STUB_MIGRATE_S", "0")))
if not os.environ.get("NEXUS_STUB_SKIP_DB"):
    asyncio.run(main())
with open(os.path.join(os.environ["NEXUS_HOME"], "run", "stub-migrated"), "w") as marker:
    marker.write("done")
