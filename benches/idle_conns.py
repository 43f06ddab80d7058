#!/usr/bin/env python3
"""Opens N TLS connections to HOST PORT, sends one keep-alive HTTP/1.1 GET on each, reads
the response, prints `open N` once all are established, then holds them idle until
SIGTERM. Used by compare.py for the memory comparison."""

import asyncio
import resource
import signal
import ssl
import sys


async def get(r, w, host):
    """One keep-alive GET / on an open connection, its response read whole."""
    w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)


async def one(host, port, ctx, sem, held):
    async with sem:
        try:
            r, w = await asyncio.open_connection(host, port, ssl=ctx)
            await get(r, w, f"{host}:{port}")
            held.append((r, w))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as e:
            print(f"connection failed: {e}", file=sys.stderr)


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(100)
    held = []
    await asyncio.gather(*(one(host, port, ctx, sem, held) for _ in range(n)))
    print(f"open {len(held)}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    alive = sum(1 for r, _ in held if not r.at_eof())
    print(f"still open at exit: {alive}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
