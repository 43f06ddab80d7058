#!/usr/bin/env python3
"""Driver of benches/compare.sh: starts the upstream and every proxy pinned to core 1,
runs wrk / h2load pinned to core 0 in interleaved rounds, measures idle-connection memory,
and writes benches/RESULTS.md and benches/results.svg. Run it through compare.sh."""

import argparse
import asyncio
import atexit
import base64
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
DURATION = int(os.environ.get("DURATION", "2" if QUICK else "8"))
CONNS = int(os.environ.get("CONNS", "50"))
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "1000" if QUICK else "10000"))
H2_CONNS, H2_STREAMS = 10, 32
# HTTP/2 scenarios: h2load connections x streams per connection. `h2-wide` is the shape of
# h2load's own documented example (-c100 -m10): ten times the upstream connections in use.
H2_SHAPES = {"h2-4k": (H2_CONNS, H2_STREAMS), "h2-wide": (100, 10)}
LOADGEN_CPU, SERVER_CPU = "0", "1"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", os.path.join(HERE, "RESULTS.md"))
SVG = os.path.join(os.path.dirname(OUT), "results.svg")

P_UP, P_NGINX, P_HAPROXY, P_CADDY, P_PC, P_PCLOG = 18080, 18441, 18442, 18443, 18444, 18445
CIPHER = "TLS_AES_128_GCM_SHA256"

procs = []


def log(*a):
    print("[compare]", *a, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


LOGDIR = tempfile.mkdtemp(prefix="portcullis-bench-logs-")


def start(name, argv, env=None, cpu=SERVER_CPU, stdout=None, stderr=None):
    full = ["taskset", "-c", cpu] + argv
    if stderr is None:
        stderr = open(os.path.join(LOGDIR, name + ".log"), "w")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(full, env=e, preexec_fn=raise_nofile,
                         stdout=stdout or subprocess.DEVNULL,
                         stderr=stderr or subprocess.DEVNULL,
                         start_new_session=True)
    procs.append((name, p))
    return p


def stop_all():
    for _, p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for _, p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


atexit.register(stop_all)
atexit.register(shutil.rmtree, LOGDIR, True)


def wait_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            name = next((n for n, p in procs if p is proc), "")
            try:
                tail = open(os.path.join(LOGDIR, name + ".log")).read()[-2000:]
            except OSError:
                tail = ""
            sys.exit(f"{what} exited with {proc.returncode} before listening on {port}\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


CLK = os.sysconf("SC_CLK_TCK")


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        return float("nan")
    x, u = float(m.group(1)), m.group(2)
    return {"us": x / 1000, "ms": x, "s": x * 1000, "m": x * 60000}[u]


def run_wrk(url, headers, env):
    argv = ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{CONNS}", f"-d{DURATION}s",
            "--latency", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, env=env).stdout
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        r["p" + q] = to_ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["bad"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    if r["requests"] == 0:
        log("wrk produced no requests:", out[-500:])
    return r


def run_h2load(url, headers, env, work, conns=None, streams=None):
    logf = os.path.join(work, "h2load.log")
    argv = ["taskset", "-c", LOADGEN_CPU, "h2load", "-t1", f"-c{conns or H2_CONNS}",
            f"-m{streams or H2_STREAMS}",
            f"-D{DURATION}", "--log-file", logf]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, env=env).stdout
    r = {}
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    r["requests"] = int(m.group(1)) if m else 0
    r["errors"] = (int(m.group(2)) + int(m.group(3))) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["bad"] = (int(m.group(3)) + int(m.group(4))) if m else 0
    lat = []
    try:
        with open(logf) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000.0)
        os.unlink(logf)
    except OSError:
        pass
    lat.sort()
    r["p50"] = lat[len(lat) // 2] if lat else float("nan")
    r["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    if r["requests"] == 0:
        log("h2load produced no requests:", out[-500:])
    return r


def client_env(work):
    """Environment for clients (wrk, h2load, openssl, python) offering only TLS 1.3
    AES-128-GCM with X25519, through an OpenSSL config written into `work`."""
    oconf = os.path.join(work, "openssl-client.cnf")
    with open(oconf, "w") as f:
        f.write("openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sd\n"
                f"[sd]\nMinProtocol = TLSv1.3\nCiphersuites = {CIPHER}\nGroups = X25519\n")
    return dict(os.environ, OPENSSL_CONF=oconf)


def pc_config(port, admin, level, extra_auth, crt, key):
    """A portcullis config: one worker, TLS 1.3 with `crt`/`key`, JSON logs at `level`, a
    route per `extra_auth` kind (name -> (authenticator TOML, headers)) and a `none` route
    for everything else, all to the upstream on P_UP."""
    s = f"""[server]
listen = ["127.0.0.1:{port}"]
workers = 1

[server.tls]
cert = "{crt}"
key = "{key}"
min_version = "1.3"

[server.limits]
max_connections = 30000
header_read_timeout = "300s"
idle_timeout = "300s"

[admin]
listen = "127.0.0.1:{admin}"

[log]
format = "json"
level = "{level}"

[upstreams.up]
targets = ["http://127.0.0.1:{P_UP}"]

[authenticators.public]
kind = "none"
"""
    for kind, (toml, _) in extra_auth.items():
        s += f"\n[authenticators.a_{kind}]\n{toml}"
    for kind in extra_auth:
        s += (f'\n[[routes]]\nname = "{kind}"\nmatch = {{ path_prefix = "/{kind}" }}\n'
              f'upstream = "up"\nauth = "a_{kind}"\n')
    s += '\n[[routes]]\nname = "public"\nmatch = { path_prefix = "/" }\nupstream = "up"\nauth = "public"\n'
    return s


def write_none_config(path, port, crt, key, level="warn"):
    """`pc_config` with the `none` route only and the admin listener on port + 100."""
    with open(path, "w") as f:
        f.write(pc_config(port, port + 100, level, {}, crt, key))


def start_haproxy(work, port, maxconn):
    """HAProxy as a TLS-terminating proxy on `port` (1 thread, keep-alive to the upstream),
    with `work`/combined.pem as its certificate."""
    hbin = shutil.which("haproxy") or "/usr/sbin/haproxy"
    hcfg = os.path.join(work, "haproxy.cfg")
    with open(hcfg, "w") as f:
        f.write(f"""
global
    nbthread 1
    maxconn {maxconn}
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites {CIPHER}
    tune.ssl.cachesize 0
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{port} ssl crt {work}/combined.pem alpn h2,http/1.1 no-tls-tickets
    option forwardfor
    unique-id-format %{{+X}}o\\ %ci%cp%fi%fp%Ts%rt%pid
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto https
    default_backend be
backend be
    server up 127.0.0.1:{P_UP}
""")
    ha = start("haproxy", [hbin, "-db", "-f", hcfg])
    wait_port(port, ha, "haproxy")
    return ha


def sh(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def auth_kinds(pc, work):
    """Credentials for the `basic`, `api_key` and `jwt` bench routes, made fresh: kind ->
    (authenticator TOML, request headers). A kind whose tool fails is left out."""
    kinds = {}  # kind -> (authenticator TOML, request headers)
    r = sh([pc, "hash-password"], input="bench-password\n")
    if r.returncode == 0:
        h = r.stdout.strip()
        cred = base64.b64encode(b"bench:bench-password").decode()
        kinds["basic"] = (f'kind = "basic"\nrealm = "bench"\nusers = {{ bench = "{h}" }}\n',
                          [f"Authorization: Basic {cred}"])
    r = sh([pc, "gen-api-key"])
    if r.returncode == 0 and len(r.stdout.split()) == 2:
        k, h = r.stdout.split()
        kinds["api_key"] = (f'kind = "api_key"\nheader = "X-API-Key"\n'
                            f'keys = [{{ id = "bench", hash = "{h}" }}]\n', [f"X-API-Key: {k}"])
    jkey, jpub = os.path.join(work, "jwt.key"), os.path.join(work, "jwt.pub")
    if sh(["openssl", "genrsa", "-out", jkey, "2048"]).returncode == 0 and \
            sh(["openssl", "rsa", "-in", jkey, "-pubout", "-out", jpub]).returncode == 0:
        hdr = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        claims = {"sub": "bench", "iss": "https://bench.example/", "aud": "bench",
                  "iat": int(time.time()), "exp": int(time.time()) + 86400, "scope": "bench"}
        body = b64url(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", jkey],
                             input=f"{hdr}.{body}".encode(), capture_output=True).stdout
        token = f"{hdr}.{body}.{b64url(sig)}"
        kinds["jwt"] = (f'kind = "jwt"\nissuer = "https://bench.example/"\naudiences = ["bench"]\n'
                        f'public_key_file = "{jpub}"\nalgorithms = ["RS256"]\n',
                        [f"Authorization: Bearer {token}"])
    return kinds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portcullis", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--command", default="benches/compare.sh")
    a = ap.parse_args()
    raise_nofile()
    for port in (P_UP, P_NGINX, P_HAPROXY, P_CADDY, P_PC, P_PCLOG, P_PC + 1000, P_PCLOG + 1000):
        if not port_free(port):
            sys.exit(f"port {port} is in use; stop whatever listens there")
    work = tempfile.mkdtemp(prefix="portcullis-bench-")
    atexit.register(shutil.rmtree, work, True)
    pc = a.portcullis
    certs = os.path.join(work, "certs")
    r = sh([pc, "certs", "--out", certs])
    if r.returncode != 0:
        sys.exit("portcullis certs failed: " + r.stderr)
    crt, key = os.path.join(certs, "server.crt"), os.path.join(certs, "server.key")
    with open(os.path.join(work, "combined.pem"), "w") as f:
        f.write(open(crt).read() + open(key).read())

    # Every client (wrk, h2load, openssl, python) offers only TLS 1.3 AES-128-GCM / X25519;
    # servers are also pinned to TLS 1.3 where they allow it.
    cenv = client_env(work)

    # --- upstream -----------------------------------------------------------------------
    up = start("upstream", [a.upstream, f"127.0.0.1:{P_UP}"])
    wait_port(P_UP, up, "upstream")

    peers = {}  # name -> dict(pid, url, h2, kinds)
    peers["direct (no proxy, plain HTTP)"] = dict(proc=up, url=f"http://127.0.0.1:{P_UP}", h2=False)

    # --- nginx --------------------------------------------------------------------------
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    ndir = os.path.join(work, "nginx")
    os.makedirs(ndir)
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 1;
worker_rlimit_nofile 40000;
pid {ndir}/nginx.pid;
error_log {ndir}/error.log warn;
events {{ worker_connections 30000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {ndir}/body;
    proxy_temp_path {ndir}/proxy;
    fastcgi_temp_path {ndir}/fcgi;
    uwsgi_temp_path {ndir}/uwsgi;
    scgi_temp_path {ndir}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    upstream up {{ server 127.0.0.1:{P_UP}; keepalive 1024; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{P_NGINX} ssl http2;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites {CIPHER};
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Request-Id $request_id;
            proxy_buffering on;
            proxy_buffers 16 16k;
            proxy_busy_buffers_size 32k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
""")
    ng = start("nginx", [nginx_bin, "-p", ndir, "-c", os.path.join(ndir, "nginx.conf"),
                         "-g", "daemon off; master_process on;"])
    wait_port(P_NGINX, ng, "nginx")
    peers["nginx"] = dict(proc=ng, url=f"https://127.0.0.1:{P_NGINX}", h2=True)

    # --- HAProxy ------------------------------------------------------------------------
    ha = start_haproxy(work, P_HAPROXY, IDLE_CONNS + 100)
    peers["HAProxy"] = dict(proc=ha, url=f"https://127.0.0.1:{P_HAPROXY}", h2=True)

    # --- Caddy --------------------------------------------------------------------------
    caddy_bin = shutil.which("caddy")
    if caddy_bin:
        cdir = os.path.join(work, "caddy")
        os.makedirs(cdir)
        with open(os.path.join(cdir, "Caddyfile"), "w") as f:
            f.write(f"""{{
    admin off
    auto_https off
}}
https://127.0.0.1:{P_CADDY} {{
    tls {crt} {key} {{
        protocols tls1.3
    }}
    reverse_proxy 127.0.0.1:{P_UP} {{
        header_up X-Request-Id {{http.request.uuid}}
        transport http {{
            keepalive 300s
            keepalive_idle_conns 1024
            keepalive_idle_conns_per_host 1024
        }}
    }}
}}
""")
        cenvs = {"GOMAXPROCS": "1", "XDG_DATA_HOME": cdir, "XDG_CONFIG_HOME": cdir, "HOME": cdir}
        ca = start("caddy", [caddy_bin, "run", "--config", os.path.join(cdir, "Caddyfile"),
                             "--adapter", "caddyfile"], env=cenvs)
        wait_port(P_CADDY, ca, "caddy")
        peers["Caddy"] = dict(proc=ca, url=f"https://127.0.0.1:{P_CADDY}", h2=True)
    else:
        log("caddy not installed: skipped")

    # --- portcullis ---------------------------------------------------------------------
    kinds = auth_kinds(pc, work)
    skipped = []
    supported = {}
    for kind, v in kinds.items():
        path = os.path.join(work, f"check-{kind}.toml")
        with open(path, "w") as f:
            f.write(pc_config(P_PC, P_PC + 1000, "warn", {kind: v}, crt, key))
        r = sh([pc, "check", "--config", path])
        if r.returncode == 0:
            supported[kind] = v
        else:
            reason = (r.stdout + r.stderr).strip().splitlines()
            first = reason[0] if reason else f"exit {r.returncode}"
            # drop the temporary file name and line: "FILE:LINE: key: message"
            skipped.append((kind, "`portcullis check`: " + re.sub(r"^\S+:\d+: ", "", first)))
            log(f"portcullis rejects kind {kind}: skipped")
    skipped.append(("introspection", "not measured by this script (needs an RFC 7662 endpoint)"))
    skipped.append(("mtls", "not measured by this script (needs client certificates, which wrk "
                            "and h2load cannot present)"))

    pcfg = os.path.join(work, "portcullis.toml")
    with open(pcfg, "w") as f:
        f.write(pc_config(P_PC, P_PC + 1000, "warn", supported, crt, key))
    pp = start("portcullis", [pc, "run", "--config", pcfg])
    wait_port(P_PC, pp, "portcullis")
    peers["portcullis none"] = dict(proc=pp, url=f"https://127.0.0.1:{P_PC}", h2=True)
    pcfg2 = os.path.join(work, "portcullis-log.toml")
    with open(pcfg2, "w") as f:
        f.write(pc_config(P_PCLOG, P_PCLOG + 1000, "info", {}, crt, key))
    access_log = open(os.path.join(work, "access.log"), "w")
    pl = start("portcullis-log", [pc, "run", "--config", pcfg2], stderr=access_log)
    wait_port(P_PCLOG, pl, "portcullis (access log)")
    peers["portcullis none + access log"] = dict(proc=pl, url=f"https://127.0.0.1:{P_PCLOG}", h2=True)
    # Each authenticator route must admit its credential (200) and refuse a request without
    # one, or its row would measure error responses.
    import http.client
    nctx = ssl.create_default_context()
    nctx.check_hostname, nctx.verify_mode = False, ssl.CERT_NONE
    for kind in list(supported):
        got = []
        for hdrs in (supported[kind][1], []):
            conn = http.client.HTTPSConnection("127.0.0.1", P_PC, context=nctx, timeout=10)
            conn.request("GET", f"/{kind}/x", headers=dict(h.split(": ", 1) for h in hdrs))
            resp = conn.getresponse()
            resp.read()
            conn.close()
            got.append(resp.status)
        if got[0] != 200 or got[1] != 401:
            skipped.append((kind, f"route answered {got[0]} with the credential and {got[1]} "
                                  "without (expected 200 and 401)"))
            log(f"kind {kind}: {got} instead of [200, 401]: skipped")
            del supported[kind]
    auth_rows = {f"portcullis {k}": dict(proc=pp, url=f"https://127.0.0.1:{P_PC}/{k}/x",
                                         headers=v[1], h2=True) for k, v in supported.items()}

    # --- TLS check: which protocol and suite each peer negotiates ------------------------
    negotiated = {}
    for name, p in peers.items():
        if not p["url"].startswith("https"):
            continue
        port = p["url"].split(":")[2].split("/")[0]
        r = sh(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"],
               input="", env=cenv, timeout=20)
        text = r.stdout + r.stderr
        proto = re.search(r"Protocol version: (\S+)", text)
        suite = re.search(r"Ciphersuite: (\S+)", text)
        group = re.search(r"(?:Server Temp Key|Negotiated TLS1.3 group): (.+)", text)
        negotiated[name] = (proto.group(1) if proto else "?", suite.group(1) if suite else "?",
                            group.group(1).strip() if group else "?")

    # --- scenarios ----------------------------------------------------------------------
    scenarios = [
        ("h1-4k", "HTTP/1.1 keep-alive, 4 KiB", "/", [], "wrk"),
        ("h1-256k", "HTTP/1.1 keep-alive, 256 KiB", "/big", [], "wrk"),
        ("h1-close", "HTTP/1.1 new TLS connection per request, 4 KiB", "/", ["Connection: close"], "wrk"),
        ("h2-4k", f"HTTP/2, {H2_CONNS} connections x {H2_STREAMS} streams, 4 KiB", "/", [], "h2load"),
        ("h2-wide", "HTTP/2, {} connections x {} streams, 4 KiB".format(*H2_SHAPES["h2-wide"]),
         "/", [], "h2load"),
    ]
    plan = []  # (scenario key, peer name, url, headers, tool)
    for key, _, path, hdrs, tool in scenarios:
        for name, p in peers.items():
            if tool == "h2load" and not p["h2"]:
                continue
            if key == "h1-close" and name.startswith("direct"):
                continue
            plan.append((key, name, p["url"] + path, hdrs, tool, p["proc"]))
        if key == "h1-4k":
            for name, p in auth_rows.items():
                plan.append((key, name, p["url"], p["headers"], tool, p["proc"]))

    # warm up every peer (pools, allocator, TLS session state)
    for key, name, url, hdrs, tool, proc in plan:
        if key == "h1-4k":
            subprocess.run(["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{CONNS}", "-d1s"] +
                           sum((["-H", h] for h in hdrs), []) + [url],
                           capture_output=True, env=cenv)

    results = {}  # (key, name) -> list of per-round dicts
    for rnd in range(ROUNDS):
        log(f"round {rnd + 1}/{ROUNDS}")
        # Within each scenario, odd rounds run the peers in reverse (A B C, C B A, ...), so
        # load from elsewhere that drifts during a round does not favour whoever goes first.
        order = []
        for skey, *_ in scenarios:
            rows = [row for row in plan if row[0] == skey]
            order += rows[::-1] if rnd % 2 else rows
        for key, name, url, hdrs, tool, proc in order:
            before = cpu_ticks(proc.pid)
            if tool == "wrk":
                r = run_wrk(url, hdrs, cenv)
            else:
                r = run_h2load(url, hdrs, cenv, work, *H2_SHAPES[key])
            ticks = cpu_ticks(proc.pid) - before
            r["cpu100k"] = (ticks / CLK) / r["requests"] * 100000 if r["requests"] else float("nan")
            r["round"] = rnd
            results.setdefault((key, name), []).append(r)
            log(f"  {key:9} {name:32} {r['rps']:10.0f} req/s p50 {r['p50']:.2f} ms "
                f"p99 {r['p99']:.2f} ms cpu/100k {r['cpu100k']:.2f} s"
                + (f" non-2xx {r['bad']}" if r["bad"] else "") + (f" errors {r['errors']}" if r["errors"] else ""))
            time.sleep(0.3)

    # --- memory: idle keep-alive TLS connections ----------------------------------------
    mem = {}
    client = os.path.join(HERE, "idle_conns.py")
    for name in ["nginx", "HAProxy", "Caddy", "portcullis none"]:
        if name not in peers:
            continue
        p = peers[name]
        port = int(p["url"].split(":")[2].split("/")[0])
        time.sleep(1)
        before = rss_kib(p["proc"].pid)
        c = subprocess.Popen(["taskset", "-c", LOADGEN_CPU, sys.executable, client,
                              "127.0.0.1", str(port), str(IDLE_CONNS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cenv,
                             preexec_fn=raise_nofile)
        line = c.stdout.readline().strip()
        time.sleep(2)
        after = rss_kib(p["proc"].pid)
        c.stdin = None
        c.send_signal(signal.SIGTERM)
        try:
            _, err = c.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            c.kill()
            err = ""
        held = int(line.split()[1]) if line.startswith("open") else 0
        mem[name] = dict(before=before, after=after, held=held,
                         per=(after - before) / held if held else float("nan"))
        log(f"  memory {name}: {before} KiB -> {after} KiB with {held} connections"
            + (f" ({err.strip()[-200:]})" if held < IDLE_CONNS else ""))
        time.sleep(3)

    access_log.close()
    write_results(a, results, scenarios, plan, negotiated, mem, skipped, work)


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, nd=0):
    if x != x:
        return "-"
    return f"{x:,.{nd}f}"


def sh_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def write_results(a, results, scenarios, plan, negotiated, mem, skipped, work):
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_total = f"{int(line.split()[1]) / 1048576:.0f} GiB"
    commit = sh_out(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"]).returncode != 0
    lines = []
    w = lines.append
    w("# portcullis load comparison\n")
    w(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- machine: {os.cpu_count()} cores, {cpu_model}, {mem_total} RAM, Linux {platform.release()}")
    w(f"- command: `{a.command}` (rounds {ROUNDS}, {DURATION} s per measurement, "
      f"wrk -t1 -c{CONNS}, h2load -t1 " + " and ".join(f"-c{c} -m{m}" for c, m in H2_SHAPES.values()) +
      f", {IDLE_CONNS} idle connections)")
    w(f"- portcullis commit: {commit}{' (with uncommitted changes in src/)' if dirty else ''}, "
      f"{sh_out(['rustc', '--version'])}, release profile (fat LTO)")
    w(f"- peers: {sh_out(['nginx', '-v'])}; {sh_out(['haproxy', '-v'])}; "
      f"caddy {sh_out(['caddy', 'version']) if shutil.which('caddy') else 'not installed'}; "
      f"{sh_out(['wrk', '-v'])[:24]}; {sh_out(['h2load', '--version'])}")
    w("- placement: load generator `taskset -c 0`; every proxy and the upstream `taskset -c 1`; "
      "one worker each (nginx `worker_processes 1`, HAProxy `nbthread 1`, Caddy `GOMAXPROCS=1`, "
      "portcullis `workers = 1`).")
    w(f"- TLS: clients offer only TLS 1.3 `{CIPHER}` with X25519 (OpenSSL config), same ECDSA "
      "certificate for every proxy, no session resumption. Negotiated: " +
      "; ".join(f"{n}: {p} {s} {g}" for n, (p, s, g) in negotiated.items()))
    w("- upstream: `benches/upstream.rs` (hyper HTTP/1.1, keep-alive, fixed 4 KiB body, 256 KiB "
      "on `/big`); every proxy keeps a keep-alive pool to it and sets X-Forwarded-For/-Proto and "
      "X-Request-Id. nginx, HAProxy and portcullis run without an access log except the row "
      "`portcullis none + access log` (JSON to a file).")
    w("- medians over the rounds; `ratio` = requests/s divided by nginx's in the same round, "
      "median (per-round values in brackets). CPU s/100k = (utime+stime of the proxy's "
      "process tree) per 100,000 completed requests; for `direct` it is the upstream's own CPU.\n")
    for key, title, *_ in scenarios:
        names = [n for k, n, *_ in plan if k == key]
        names = list(dict.fromkeys(names))
        if not names:
            continue
        # HTTP/2's goal is HAProxy's throughput: those tables also give the ratio to it.
        refs = ["nginx", "HAProxy"] if key in H2_SHAPES else ["nginx"]
        w(f"## {title}\n")
        w("| peer | requests/s | p50 ms | p99 ms | CPU s/100k req | "
          + " | ".join(f"ratio to {ref}" for ref in refs) + " |")
        w("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(refs))
        for n in names:
            rs = results.get((key, n), [])
            cols = []
            for ref in refs:
                ratios = [r["rps"] / g["rps"] for r, g in zip(rs, results.get((key, ref), []))
                          if g["rps"] > 0]
                cols.append(f"{fmt(med(ratios), 2)} [{', '.join(f'{x:.2f}' for x in ratios)}]")
            note = ""
            if any(r["bad"] or r["errors"] for r in rs):
                note = f" (non-2xx {sum(r['bad'] for r in rs)}, socket errors {sum(r['errors'] for r in rs)})"
            w(f"| {n}{note} | {fmt(med([r['rps'] for r in rs]))} | {fmt(med([r['p50'] for r in rs]), 2)} "
              f"| {fmt(med([r['p99'] for r in rs]), 2)} | {fmt(med([r['cpu100k'] for r in rs]), 2)} "
              f"| {' | '.join(cols)} |")
        w("")
    auth_names = list(dict.fromkeys(n for k, n, *_ in plan
                                    if k == "h1-4k" and n.startswith("portcullis ")
                                    and n not in ("portcullis none", "portcullis none + access log")))
    if auth_names:
        base = results.get(("h1-4k", "portcullis none"), [])
        w("## Authenticators vs `none` (HTTP/1.1 keep-alive, 4 KiB)\n")
        w("Same portcullis process as `portcullis none`, one route per kind, the same credential "
          "on every request over keep-alive (so `basic` and `jwt` answer from their caches). "
          "`ratio to none` = requests/s divided by the `none` route's in the same round, median "
          "(per-round values in brackets); goal ≥ 0.9.\n")
        w("| route | requests/s | p50 ms | p99 ms | CPU s/100k req | ratio to none | CPU ratio to none |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in ["portcullis none"] + auth_names:
            rs = results.get(("h1-4k", n), [])
            by_round = {b["round"]: b for b in base}
            ratios = [r["rps"] / by_round[r["round"]]["rps"] for r in rs
                      if r["round"] in by_round and by_round[r["round"]]["rps"] > 0]
            cpu = [r["cpu100k"] / by_round[r["round"]]["cpu100k"] for r in rs
                   if r["round"] in by_round and by_round[r["round"]]["cpu100k"] > 0]
            note = ""
            if any(r["bad"] or r["errors"] for r in rs):
                note = f" (non-2xx {sum(r['bad'] for r in rs)}, socket errors {sum(r['errors'] for r in rs)})"
            w(f"| {n}{note} | {fmt(med([r['rps'] for r in rs]))} | {fmt(med([r['p50'] for r in rs]), 2)} "
              f"| {fmt(med([r['p99'] for r in rs]), 2)} | {fmt(med([r['cpu100k'] for r in rs]), 2)} "
              f"| {fmt(med(ratios), 2)} [{', '.join(f'{x:.2f}' for x in ratios)}] | {fmt(med(cpu), 2)} |")
        w("")
    w(f"## Memory: {IDLE_CONNS} idle keep-alive TLS connections\n")
    w("Each connection completes a TLS 1.3 handshake and one HTTP/1.1 GET (4 KiB), then stays "
      "open and idle (`benches/idle_conns.py`). RSS is VmRSS summed over the process tree.\n")
    w("| peer | RSS before | RSS with connections | connections held | KiB per connection | ratio to nginx |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    ngm = mem.get("nginx", {}).get("per", float("nan"))
    for n, m in mem.items():
        w(f"| {n} | {m['before'] / 1024:.1f} MiB | {m['after'] / 1024:.1f} MiB | {m['held']} | "
          f"{m['per']:.1f} | {fmt(m['per'] / ngm if ngm == ngm and ngm else float('nan'), 2)} |")
    w("")
    if skipped:
        w("## Not measured\n")
        for k, why in skipped:
            w(f"- `{k}`: {why}")
        w("")
    w("![results](results.svg)\n")
    history = kept_history(OUT)
    if history:
        w(history)
    w("## Raw per-round figures\n")
    w("| scenario | peer | round | requests/s | p50 ms | p99 ms | CPU s/100k |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (key, n), rs in results.items():
        for r in rs:
            w(f"| {key} | {n} | {r['round'] + 1} | {fmt(r['rps'])} | {fmt(r['p50'], 2)} | "
              f"{fmt(r['p99'], 2)} | {fmt(r['cpu100k'], 2)} |")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    write_svg(results, scenarios, plan, mem)
    log(f"wrote {OUT} and {SVG}")


def kept_history(path):
    """The `## History` section of the RESULTS.md being replaced (hand-written notes on
    earlier runs), so a new run does not erase it; empty if there is none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    start = text.find("\n## History\n")
    if start < 0:
        return ""
    end = text.find("\n## Raw per-round figures", start)
    section = text[start + 1:end if end >= 0 else len(text)]
    return section.rstrip("\n") + "\n"


def write_svg(results, scenarios, plan, mem):
    colors = {"direct": "#999999", "nginx": "#2e7d32", "HAProxy": "#1565c0", "Caddy": "#00838f",
              "portcullis": "#c62828"}
    panels = []
    for key, title, *_ in scenarios:
        names = list(dict.fromkeys(n for k, n, *_ in plan if k == key))
        vals = [(n, med([r["rps"] for r in results.get((key, n), [])])) for n in names]
        panels.append((title + " — requests/s (median)", vals, "{:,.0f}"))
    if mem:
        panels.append(("Idle TLS connection — KiB RSS per connection (lower is better)",
                       [(n, m["per"]) for n, m in mem.items()], "{:,.1f}"))
    W, label_w, bar_h, gap = 900, 250, 18, 4
    y = 40
    out = []
    for title, vals, f in panels:
        out.append(f'<text x="10" y="{y}" font-size="14" font-weight="bold">{esc(title)}</text>')
        y += 10
        top = max([v for _, v in vals if v == v] or [1]) or 1
        for n, v in vals:
            c = next((col for k, col in colors.items() if n.startswith(k)), "#555")
            bw = 0 if v != v else (W - label_w - 110) * v / top
            out.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="12" text-anchor="end">{esc(n)}</text>')
            out.append(f'<rect x="{label_w}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{c}"/>')
            out.append(f'<text x="{label_w + bw + 6:.1f}" y="{y + 13}" font-size="12">'
                       f'{"-" if v != v else f.format(v)}</text>')
            y += bar_h + gap
        y += 28
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
           f'<text x="10" y="20" font-size="16" font-weight="bold">portcullis vs nginx, HAProxy, '
           f'Caddy (1 worker, TLS 1.3, loopback)</text>' + "".join(out) + "</svg>\n")
    with open(SVG, "w") as fh:
        fh.write(svg)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    main()
