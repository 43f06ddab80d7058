#!/usr/bin/env python3
"""Sparse keep-alive load: N TLS connections to HOST PORT, each sending one GET every
INTERVAL seconds for DURATION seconds; prints the number of completed requests. With an
interval above 250 ms every request wakes a parked connection, so the proxy's CPU per
request (from /proc/PID/stat before and after) shows what parking costs.

  python3 benches/sparse_conns.py HOST PORT N INTERVAL DURATION
"""

import asyncio
import os
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idle_conns import get  # noqa: E402


async def one(host, port, ctx, interval, duration, done):
    r, w = await asyncio.open_connection(host, port, ssl=ctx)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        await get(r, w, host)
        done[0] += 1
        await asyncio.sleep(interval)
    w.close()


async def main():
    host, port = sys.argv[1], int(sys.argv[2])
    n, interval, duration = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    done = [0]
    await asyncio.gather(*(one(host, port, ctx, interval, duration, done) for _ in range(n)))
    print(done[0])


asyncio.run(main())
