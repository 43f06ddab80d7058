#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind.

Wall-clock load runs on a shared 2-core machine swing +-15 % per round; an instruction
count does not, so a hot-path change of a few per cent shows here first (then confirm it
with benches/ab.py). Kernel work (syscalls, the TCP stack) is not counted.

  python3 benches/instructions.py --upstream UPSTREAM_BIN [--h1] [--route KIND] [-n 20000] A [B ...]

Each binary runs the `none` route of benches/ab.py (or, with --route basic|api_key|jwt,
that route of compare.sh with its cached credential on every request) under callgrind; h2load (HTTP/2,
10 connections x 32 streams, or --h1: 50 HTTP/1.1 keep-alive connections) sends a 3,000
request warm-up, the counters are zeroed, then N requests are counted.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402

PORT = 18700  # admin on PORT + 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--h1", action="store_true")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--route", default="none", choices=["none", "basic", "api_key", "jwt"])
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    if not c.sh(["which", "valgrind"]).stdout:
        sys.exit("valgrind is needed: apt-get install valgrind")
    work = tempfile.mkdtemp(prefix="portcullis-instr-")
    c.sh([a.bins[0], "certs", "--out", work])
    env = c.client_env(work)
    up = c.start("upstream", [a.upstream, f"127.0.0.1:{c.P_UP}"])
    c.wait_port(c.P_UP, up, "upstream")
    cfg = os.path.join(work, "pc.toml")
    load = ["taskset", "-c", c.LOADGEN_CPU, "h2load", "-t1"]
    load += ["--h1", "-c50"] if a.h1 else ["-c10", "-m32"]
    url = f"https://127.0.0.1:{PORT}/"
    if a.route == "none":
        c.write_none_config(cfg, PORT, f"{work}/server.crt", f"{work}/server.key")
    else:
        kinds = c.auth_kinds(a.bins[0], work)
        if a.route not in kinds:
            sys.exit(f"could not make a {a.route} credential")
        with open(cfg, "w") as f:
            f.write(c.pc_config(PORT, PORT + 100, "warn", {a.route: kinds[a.route]},
                                f"{work}/server.crt", f"{work}/server.key"))
        for h in kinds[a.route][1]:
            load += ["-H", h]
        url += f"{a.route}/x"
    for b in a.bins:
        out = os.path.join(work, os.path.basename(b) + ".cg")
        p = c.start(os.path.basename(b), ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                          b, "run", "--config", cfg],
                    stderr=subprocess.DEVNULL)
        c.wait_port(PORT, p, b)
        subprocess.run(load + ["-n", "3000", url], capture_output=True, env=env)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True)
        r = subprocess.run(load + ["-n", str(a.n), url], capture_output=True, text=True, env=env)
        if f"{a.n} succeeded" not in r.stdout:
            sys.exit(f"{b}: not every request succeeded:\n{r.stdout[-600:]}")
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True)
        time.sleep(1)
        p.send_signal(2)
        p.wait(timeout=60)
        total = 0
        with open(out + ".1") as f:
            for line in f:
                if line.startswith("summary:"):
                    total = int(line.split()[1])
        print(f"{b}: {total / a.n:,.0f} instructions per request "
              f"({'HTTP/1.1' if a.h1 else 'HTTP/2'}, route {a.route}, {a.n} requests; "
              f"profile: callgrind_annotate {out}.1)", flush=True)


if __name__ == "__main__":
    main()
