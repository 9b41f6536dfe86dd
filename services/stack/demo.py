"""``wrtci up --demo``: push a firmware through the running stack and show the result.

Each part of the pipeline adds its step here as it lands; the demo checks
what exists end to end and says plainly what does not yet.
"""

from __future__ import annotations

from services import db
from services.db.migrate import current_version
from services.runtime import connect_nats
from services.stack.up import Stack


async def run_demo(stack: Stack) -> int:
    config = stack.config
    out = stack.out
    nc = await connect_nats(config.nats, "wrtci-demo")
    try:
        info = await nc.jetstream().stream_info(config.nats.subjects.events_stream)
        print(f"\ndemo: EVENTS stream holds {info.state.messages} events", file=out)
    finally:
        await nc.close()
    conn = await db.connect(config.database)
    try:
        version = await current_version(conn)
        firmware = await conn.fetchval("SELECT count(*) FROM checkouts")
        print(f"demo: database schema version {version}, {firmware} firmware recorded", file=out)
    finally:
        await conn.close()
    buckets = [b.name for b in stack.minio().list_buckets()]
    print(f"demo: object storage buckets {buckets}", file=out, flush=True)
    return 0
