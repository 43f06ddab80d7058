#!/usr/bin/env python3
"""Paired A/B of portcullis builds on the `none` route (the figures in hot-path commit
messages): every binary gets the same config, the runs interleave A B A B ... and the
report is per-round requests/s, p99, CPU s/100k requests and the ratio to the first binary.

  python3 benches/ab.py --upstream UPSTREAM_BIN [--level info] [--h2 [--h2-shape 100x10]]
                        [--path /big] [--route basic|api_key|jwt] [--haproxy] A B ...

--route measures that authenticator's route of compare.sh instead of `none`, with the
same (cached) credential on every request.

--haproxy adds HAProxy (configured as in compare.py) as one more peer, reported after the
binaries with its ratio to the first one.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--level", default="warn")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--path", default="/")
    ap.add_argument("--h2", action="store_true")
    ap.add_argument("--close", action="store_true")
    ap.add_argument("--haproxy", action="store_true")
    ap.add_argument("--route", default="none", choices=["none", "basic", "api_key", "jwt"])
    ap.add_argument("--h2-shape", default=f"{c.H2_CONNS}x{c.H2_STREAMS}",
                    help="h2load connections x streams per connection (default: compare.sh's)")
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    c.raise_nofile()
    c.H2_CONNS, c.H2_STREAMS = (int(x) for x in a.h2_shape.split("x"))
    work = tempfile.mkdtemp(prefix="portcullis-ab-")
    r = c.sh([a.bins[0], "certs", "--out", work])
    crt, key = f"{work}/server.crt", f"{work}/server.key"
    env = c.client_env(work)
    up = c.start("upstream", [a.upstream, f"127.0.0.1:{c.P_UP}"])
    c.wait_port(c.P_UP, up, "upstream")
    hdrs = ["Connection: close"] if a.close else []
    auth = {}
    if a.route != "none":
        kinds = c.auth_kinds(a.bins[0], work)
        if a.route not in kinds:
            sys.exit(f"could not make a {a.route} credential")
        auth = {a.route: kinds[a.route]}
        hdrs += kinds[a.route][1]
        a.path = f"/{a.route}{a.path}"
    peers = []
    for i, b in enumerate(a.bins):
        port = 18600 + i
        cfg = f"{work}/pc{i}.toml"
        with open(cfg, "w") as f:
            f.write(c.pc_config(port, port + 100, a.level, auth, crt, key))
        logf = open(f"{work}/log{i}", "w")
        p = c.start(f"pc{i}", [b, "run", "--config", cfg], stderr=logf)
        c.wait_port(port, p, b)
        peers.append((b, p, f"https://127.0.0.1:{port}{a.path}"))
    if a.haproxy:
        with open(f"{work}/combined.pem", "w") as f:
            f.write(open(crt).read() + open(key).read())
        ha = c.start_haproxy(work, 18599, 5000)
        peers.append(("HAProxy", ha, f"https://127.0.0.1:18599{a.path}"))
    for b, p, url in peers:
        warm = [x for h in hdrs for x in ("-H", h)]
        subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c50", "-d2s", *warm, url],
                       capture_output=True, env=env)
    res = {b: [] for b, _, _ in peers}
    for rnd in range(a.rounds):
        for b, p, url in peers:
            before = c.cpu_ticks(p.pid)
            r = c.run_h2load(url, hdrs, env, work) if a.h2 else c.run_wrk(url, hdrs, env)
            t = c.cpu_ticks(p.pid) - before
            r["cpu"] = t / c.CLK / r["requests"] * 1e5 if r["requests"] else float("nan")
            res[b].append(r)
            print(f"round {rnd + 1} {b}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} p99 {r['p99']:.2f} "
                  f"cpu/100k {r['cpu']:.2f}", file=sys.stderr, flush=True)
            time.sleep(0.3)
    base = res[a.bins[0]]
    for b, rs in res.items():
        ratios = [x["rps"] / y["rps"] for x, y in zip(rs, base)]
        print(f"{b}: median {statistics.median(x['rps'] for x in rs):.0f} req/s, "
              f"p99 {statistics.median(x['p99'] for x in rs):.2f} ms, "
              f"cpu/100k {statistics.median(x['cpu'] for x in rs):.2f} s, "
              f"ratio {statistics.median(ratios):.3f} [{', '.join(f'{x:.3f}' for x in ratios)}]")


if __name__ == "__main__":
    main()
