"""HTTP benchmark: the gateway's proxy, static files and front door against nginx and uvicorn.

    .venv/bin/python bench/http_bench.py [--rounds 3] [--duration 5] [--against TREE ...]
    .venv/bin/python bench/http_bench.py --profile DIR     # py-spy on this tree's gateway, per job

One run, every server side by side, interleaved round by round (the order rotates), each
server alone on CPU 0 (``taskset -c 0``) and ``wrk -t1 -c20`` on CPU 1; the upstream site
(nginx) and the upload sink run on CPU 1 too, so CPU 0 holds only the server measured.

Jobs (requests/s and the server process's CPU µs per request, from ``/proc/PID/stat``):

* **proxy**: a 2 KiB page from the upstream nginx, through the gateway and through nginx
  (``proxy_pass`` to an ``upstream`` block with a ``keepalive`` pool, HTTP/1.1);
* **static**: a 2 KiB file, served by the gateway (``http.static_root``) and by nginx;
* **healthz**: the gateway's ``/healthz`` against uvicorn's hello world (``--http h11``,
  ``bench/baselines/hello_asgi.py``): h11 parses in both;
* **download / upload**: 100 MiB through the proxy (one ``curl``, pinned to CPU 1): MB/s
  against nginx, the server's CPU, and the gateway's peak RSS during the transfer (VmHWM,
  reset before each transfer through ``/proc/PID/clear_refs``).  The upload goes to a sink
  that reads the body and answers ``200``; both proxies buffer the body (nginx and the
  gateway spool a large one to a temporary file);
* **static 100 MiB**: the same file from the static root (nginx's ``sendfile``).

The gateways (this checkout, and each ``--against`` tree: ``git worktree add /tmp/before
COMMIT``) run with ``--log-level WARNING``; a small wrapper counts each ``UpstreamPool``'s
leases so the proxy job's pool hit rate (``reused / (reused + opened)``) is printed too.

"others" is the machine's busy CPU during a run minus the server's, wrk's and the upstream's:
when its median is above 20% of a core the figures are marked provisional.  Below the table,
each request job's CPU per request is also given as the median of each round's ratio (this
tree's gateway against the peer and against each ``--against`` gateway): both sides of a
round share the machine's load at that moment, so these move less on a busy machine.

Needs ``wrk`` and ``curl`` (Debian packages), and nginx: when ``/usr/sbin/nginx`` is missing,
the set-up step installs Debian's ``nginx-light`` with apt-get (``--no-install`` to refuse).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NGINX = "/usr/sbin/nginx"
PAGE = b"<!doctype html><title>bench</title>\n" + b"<p>" + b"x" * 2000 + b"</p>\n"
PAGE = PAGE[:2048].ljust(2048, b"\n")
BIG_SIZE = 100 * 1024 * 1024
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Runs the gateway from whichever tree is first on sys.path (the cwd), counting pool leases;
# SIGUSR2 writes the counts to $BENCH_POOL_STATS.
GATEWAY_SHIM = r"""
import json, os, signal, sys
from gateway.proxy import pool as _pool
_made = []
_init = _pool.UpstreamPool.__init__
def _record(self, *a, **k):
    _init(self, *a, **k)
    _made.append(self)
_pool.UpstreamPool.__init__ = _record
def _dump(*_):
    path = os.environ["BENCH_POOL_STATS"]
    with open(path + ".tmp", "w") as f:
        json.dump([[str(p.upstream), p.opened, p.reused] for p in _made], f)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR2, _dump)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


def family(pid: int) -> list[int]:
    """``pid`` and its children (nginx's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    pool_stats: Path | None = None
    log: list[bytes] = field(default_factory=list)

    def pids(self) -> list[int]:
        return family(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def pools(self) -> dict[str, tuple[int, int]]:
        """``{upstream: (opened, reused)}`` from the gateway wrapper (``{}`` for others)."""
        if self.pool_stats is None:
            return {}
        before = self.pool_stats.stat().st_mtime_ns if self.pool_stats.exists() else 0
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.pool_stats.exists() and self.pool_stats.stat().st_mtime_ns != before:
                return {u: (o, r) for u, o, r in json.loads(self.pool_stats.read_text())}
            time.sleep(0.02)
        raise SystemExit(f"{self.name}: no pool statistics within 5 s")


def spawn(
    name: str, argv: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    lines: list[bytes] = []

    def drain() -> None:  # a chatty server must never block on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            del lines[:-50]

    threading.Thread(target=drain, daemon=True).start()
    return proc, lines


def wait_http(server: Server, port: int, path: str = "/", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    tail = b"".join(server.log[-10:]).decode(errors="replace")
    raise SystemExit(f"{server.name}: no 200 for {path} on port {port}\n{tail}")


def ensure_nginx(install: bool) -> None:
    """The set-up step: Debian's nginx-light when no nginx is installed."""
    if os.access(NGINX, os.X_OK):
        return
    if not install:
        raise SystemExit(f"{NGINX} is missing: apt-get install nginx-light (or drop --no-install)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("set-up: installing Debian's nginx-light...", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"],
        check=True,
        env=env,
    )
    # The package starts a system nginx on port 80; it is not ours to leave running.
    subprocess.run([*sudo, "systemctl", "disable", "--now", "nginx"], check=False, env=env)


def nginx_conf(tmp: Path, name: str, servers: str) -> Path:
    base = tmp / name
    base.mkdir()
    temp = "\n".join(
        f"  {kind}_temp_path {base}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = base / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {base}/nginx.pid;\n"
        f"error_log {base}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
        "  default_type application/octet-stream;\n"
        f"{temp}\n{servers}\n}}\n"
    )
    return conf


def start_nginx(name: str, conf: Path, cpu: int, ports: dict[str, int]) -> Server:
    proc, log = spawn(name, pinned(cpu, [NGINX, "-e", "stderr", "-c", str(conf)]))
    return Server(name, proc, ports, log=log)


def start_gateway(name: str, tree: Path, config: Path, ports: dict[str, int]) -> Server:
    stats = config.with_suffix(".pool.json")
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_POOL_STATS": str(stats)}
    argv = [sys.executable, "-c", GATEWAY_SHIM, "serve", "--config", str(config)]
    proc, log = spawn(name, pinned(0, [*argv, "--log-level", "WARNING"]), cwd=tree, env=env)
    return Server(name, proc, ports, pool_stats=stats, log=log)


def sink_main(port: int) -> int:
    """The upload sink: reads each request's Content-Length body and answers 200 (keep-alive)."""
    listener = socket.create_server(("127.0.0.1", port), backlog=64)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)

    def serve(sock: socket.socket) -> None:
        with sock:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pending += data
                head, pending = pending.split(b"\r\n\r\n", 1)
                match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if match is None:
                    sock.sendall(b"HTTP/1.1 411 Length Required\r\nConnection: close\r\n\r\n")
                    return
                left = int(match.group(1)) - len(pending)
                pending = b"" if left >= 0 else pending[len(pending) + left :]
                while left > 0:
                    n = sock.recv_into(view[: min(left, len(buffer))])
                    if not n:
                        return
                    left -= n
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    rate: float  # requests/s (wrk) or MB/s (curl)
    cpu: float  # server CPU seconds
    count: float  # requests, or bytes
    others: float  # % of a core used by everything else on the machine
    rss: float = 0.0  # peak RSS in MiB during the run (transfers)
    rss_before: float = 0.0  # RSS in MiB when the transfer started

    @property
    def us_per_request(self) -> float:
        return self.cpu / max(self.count, 1) * 1e6


@contextmanager
def accounting(server: Server, helpers: list[Server]) -> Iterator[dict[str, float]]:
    """Measures the server's CPU and what the rest of the machine used meanwhile."""
    pids, helper_pids = server.pids(), [p for h in helpers for p in h.pids()]
    out: dict[str, float] = {}
    t0, busy0, own0 = time.monotonic(), machine_busy(), children_cpu()
    cpu0, help0 = cpu_seconds(pids), cpu_seconds(helper_pids)
    yield out
    wall = time.monotonic() - t0
    out["cpu"] = cpu_seconds(pids) - cpu0
    ours = out["cpu"] + cpu_seconds(helper_pids) - help0 + children_cpu() - own0
    out["others"] = max(0.0, machine_busy() - busy0 - ours) / wall * 100


def wrk(server: Server, url: str, duration: float, connections: int, helpers: list[Server]) -> Run:
    argv = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", url])
    with accounting(server, helpers) as acc:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, check=True
        ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    if bad := re.search(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", out):
        print(f"warning: {server.name} {url}: {bad.group(0)}", file=sys.stderr)
    return Run(float(rate.group(1)), acc["cpu"], float(count.group(1)), acc["others"])


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int, field: str = "VmHWM") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(field + r":\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def curl(server: Server, url: str, upload: Path | None, helpers: list[Server]) -> Run:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{size_upload}"]
    if upload is not None:
        argv += ["-X", "POST", "-T", str(upload), "-H", "Expect:"]
    argv.append(url)
    for pid in server.pids():
        reset_peak_rss(pid)
    rss_before = max(peak_rss(p, "VmRSS") for p in server.pids())
    t0 = time.monotonic()
    with accounting(server, helpers) as acc:
        out = subprocess.run(pinned(1, argv), capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"{server.name}: curl {url} failed: {out.stderr}")
    down, up = (float(x) for x in out.stdout.split())
    moved = up if upload is not None else down
    if moved < BIG_SIZE:
        raise SystemExit(f"{server.name}: {url} moved {moved:.0f} bytes, not {BIG_SIZE}")
    rss = max(peak_rss(p) for p in server.pids())
    return Run(moved / wall / 1e6, acc["cpu"], moved, acc["others"], rss, rss_before)


# --------------------------------------------------------------------------- the run


@dataclass
class Job:
    name: str
    label: str
    servers: list[tuple[Server, str]]  # (server, url): the peer first
    kind: str = "wrk"  # or "download", "upload"


class _Started(dict[str, Server]):
    """A dict of servers that also lists each one in ``started`` as it is added."""

    def __init__(self, started: list[Server]) -> None:
        super().__init__()
        self.started = started

    def __setitem__(self, key: str, server: Server) -> None:
        super().__setitem__(key, server)
        self.started.append(server)


def setup(
    tmp: Path, trees: dict[str, Path], started: list[Server]
) -> tuple[dict[str, Server], Path]:
    """Files, the upstream site and sink on CPU 1, the peers and the gateways on CPU 0; every
    process started goes into ``started`` (for the caller to stop, even if one fails)."""
    site, static_root = tmp / "site", tmp / "static"
    site.mkdir()
    static_root.mkdir()
    big = tmp / "big.bin"
    with big.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(BIG_SIZE // MiB):
            f.write(block)
    for root in (site, static_root):
        (root / "page.html").write_bytes(PAGE)
        os.link(big, root / "big.bin")
    ports = {n: free_port() for n in ("site", "sink", "nproxy", "nstatic", "uvicorn")}
    servers: dict[str, Server] = _Started(started)

    upstream_conf = nginx_conf(
        tmp, "upstream", f"  server {{ listen 127.0.0.1:{ports['site']}; root {site}; }}"
    )
    servers["upstream"] = start_nginx("nginx upstream", upstream_conf, 1, {"http": ports["site"]})
    proc, log = spawn("sink", pinned(1, [sys.executable, __file__, "--sink", str(ports["sink"])]))
    servers["sink"] = Server("sink", proc, {"http": ports["sink"]}, log=log)

    proxied = (
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        "    proxy_set_header Host $host;\n"
    )
    peer_conf = nginx_conf(
        tmp,
        "peer",
        f"  upstream site {{ server 127.0.0.1:{ports['site']}; keepalive 32; }}\n"
        f"  upstream sink {{ server 127.0.0.1:{ports['sink']}; keepalive 8; }}\n"
        f"  server {{\n    listen 127.0.0.1:{ports['nproxy']};\n"
        f"    location / {{\n      proxy_pass http://site;\n{proxied}    }}\n"
        f"    location /upload {{\n      client_max_body_size 0;\n"
        f"      proxy_pass http://sink;\n{proxied}    }}\n  }}\n"
        f"  server {{ listen 127.0.0.1:{ports['nstatic']}; root {static_root}; }}",
    )
    servers["nginx"] = start_nginx(
        "nginx", peer_conf, 0, {"proxy": ports["nproxy"], "static": ports["nstatic"]}
    )
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baselines.hello_asgi:app",
        "--http",
        "h11",
        "--loop",
        "asyncio",
        "--port",
        str(ports["uvicorn"]),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc, log = spawn("uvicorn", pinned(0, uvicorn))
    servers["uvicorn"] = Server("uvicorn", proc, {"http": ports["uvicorn"]}, log=log)

    for name, tree in trees.items():
        gw = {"proxy": free_port(), "static": free_port()}
        proxy_cfg = tmp / f"gw-{name}-proxy.toml"
        proxy_cfg.write_text(
            f'[server]\nlisten = ["127.0.0.1:{gw["proxy"]}"]\n'
            f'[proxy]\nupstream = "http://127.0.0.1:{ports["site"]}"\n'
            f"max_body_size = {2 * BIG_SIZE}\npool_size = 32\n"
            f'[[proxy.routes]]\nprefix = "/upload"\n'
            f'upstream = "http://127.0.0.1:{ports["sink"]}"\n'
        )
        static_cfg = tmp / f"gw-{name}-static.toml"
        static_cfg.write_text(
            f'[server]\nlisten = ["127.0.0.1:{gw["static"]}"]\n'
            f'[http]\nstatic_root = "{static_root}"\n'
        )
        servers[f"gw-{name}"] = start_gateway(f"gateway ({name})", tree, proxy_cfg, gw)
        servers[f"gws-{name}"] = start_gateway(f"gateway ({name}) static", tree, static_cfg, gw)

    wait_http(servers["upstream"], ports["site"], "/page.html")
    wait_http(servers["nginx"], ports["nproxy"], "/page.html")
    wait_http(servers["nginx"], ports["nstatic"], "/page.html")
    wait_http(servers["uvicorn"], ports["uvicorn"], "/healthz")
    for name in trees:
        wait_http(servers[f"gw-{name}"], servers[f"gw-{name}"].ports["proxy"], "/page.html")
        wait_http(servers[f"gws-{name}"], servers[f"gws-{name}"].ports["static"], "/page.html")
    gateways = {name: servers[f"gw-{name}"] for name in trees}
    return gateways, big


def jobs_for(servers: list[Server], trees: dict[str, Path], only: set[str]) -> list[Job]:
    by = {s.name: s for s in servers}
    nginx, uvicorn = by["nginx"], by["uvicorn"]
    proxy_gws = [(by[f"gateway ({n})"], by[f"gateway ({n})"].ports["proxy"]) for n in trees]
    static_gws = [
        (by[f"gateway ({n}) static"], by[f"gateway ({n}) static"].ports["static"]) for n in trees
    ]

    def url(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    np, ns, up = nginx.ports["proxy"], nginx.ports["static"], uvicorn.ports["http"]
    proxy_page = [(g, url(p, "/page.html")) for g, p in proxy_gws]
    static_page = [(g, url(p, "/page.html")) for g, p in static_gws]
    jobs = [
        Job("proxy", "proxy 2 KiB page", [(nginx, url(np, "/page.html")), *proxy_page]),
        Job("static", "static 2 KiB file", [(nginx, url(ns, "/page.html")), *static_page]),
        Job(
            "healthz",
            "/healthz (uvicorn: hello world)",
            [(uvicorn, url(up, "/healthz")), *((g, url(p, "/healthz")) for g, p in static_gws)],
        ),
        Job(
            "download",
            "proxied download 100 MiB",
            [(nginx, url(np, "/big.bin")), *((g, url(p, "/big.bin")) for g, p in proxy_gws)],
            "download",
        ),
        Job(
            "upload",
            "proxied upload 100 MiB",
            [(nginx, url(np, "/upload")), *((g, url(p, "/upload")) for g, p in proxy_gws)],
            "upload",
        ),
        Job(
            "bigstatic",
            "static 100 MiB file",
            [(nginx, url(ns, "/big.bin")), *((g, url(p, "/big.bin")) for g, p in static_gws)],
            "download",
        ),
    ]
    return [j for j in jobs if j.name in only]


def measure(args: argparse.Namespace, trees: dict[str, Path]) -> int:
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        servers: list[Server] = []
        try:
            gateways, big = setup(tmp, trees, servers)
            helpers = [s for s in servers if s.name in ("nginx upstream", "sink")]
            jobs = jobs_for(servers, trees, only)
            if args.profile:
                return profile(args, jobs, big, helpers)
            load = os.getloadavg()[0]
            results: dict[tuple[str, str], list[Run]] = {}
            hits: dict[str, list[int]] = {n: [0, 0] for n in trees}
            for job in jobs:  # warm-up: pools filled, caches primed, first imports done
                if job.kind == "wrk":
                    for server, target in job.servers:
                        wrk(server, target, 1, args.connections, helpers)
            for round_ in range(args.rounds):
                for job in jobs:
                    order = job.servers[round_ % len(job.servers) :]
                    order += job.servers[: round_ % len(job.servers)]
                    for server, target in order:
                        before = server.pools()
                        if job.kind == "wrk":
                            run = wrk(server, target, args.duration, args.connections, helpers)
                        else:
                            upload = big if job.kind == "upload" else None
                            run = curl(server, target, upload, helpers)
                        results.setdefault((job.name, server.name), []).append(run)
                        if job.name == "proxy" and server.pool_stats is not None:
                            tree = next(n for n, g in gateways.items() if g is server)
                            for key, (opened, reused) in server.pools().items():
                                was = before.get(key, (0, 0))
                                hits[tree][0] += opened - was[0]
                                hits[tree][1] += reused - was[1]
                    print(f"round {round_ + 1}: {job.name} done", file=sys.stderr)
        finally:
            for server in reversed(servers):
                server.stop()
    report(args, jobs, results, hits, load)
    return 0


def report(
    args: argparse.Namespace,
    jobs: list[Job],
    results: dict[tuple[str, str], list[Run]],
    hits: dict[str, list[int]],
    load: float,
) -> None:
    others = [r.others for runs in results.values() for r in runs]
    busy = statistics.median(others) if others else 0.0
    print(
        f"HTTP: servers on CPU 0, wrk -t1 -c{args.connections} {args.duration:g} s on CPU 1, "
        f"medians of {args.rounds}; load average at start {load:.2f}; "
        f"others' CPU median {busy:.0f}% of a core"
        + ("  ** PROVISIONAL: busy machine **" if busy > 20 else "")
    )
    wrk_jobs = [j for j in jobs if j.kind == "wrk"]
    if wrk_jobs:
        print()
        print_requests(wrk_jobs, results)
        print()
        print_paired(wrk_jobs, results)
    transfers = [j for j in jobs if j.kind != "wrk"]
    if transfers:
        print()
        print_transfers(transfers, results)
    if any(opened + reused for opened, reused in hits.values()):
        print()
        for tree, (opened, reused) in hits.items():
            rate = reused / max(opened + reused, 1)
            print(
                f"pool hit rate, proxy job, gateway ({tree}): {rate:.2%} "
                f"({reused:,} reused of {opened + reused:,} leases)"
            )


def median(runs: list[Run], key: Callable[[Run], float]) -> float:
    return statistics.median(key(r) for r in runs)


def print_requests(jobs: list[Job], results: dict[tuple[str, str], list[Run]]) -> None:
    print(
        f"| {'job':33} | {'server':24} | {'CPU µs/req':>10} | {'req/s':>8} "
        f"| {'CPU x peer':>10} | {'req/s x peer':>12} |"
    )
    print(f"|{'-' * 35}|{'-' * 26}|{'-' * 12}|{'-' * 10}|{'-' * 12}|{'-' * 14}|")
    for job in (j for j in jobs if j.kind == "wrk"):
        peer = results[(job.name, job.servers[0][0].name)]
        p_cpu, p_rate = median(peer, lambda r: r.us_per_request), median(peer, lambda r: r.rate)
        for server, _ in job.servers:
            runs = results[(job.name, server.name)]
            cpu, rate = median(runs, lambda r: r.us_per_request), median(runs, lambda r: r.rate)
            print(
                f"| {job.label:33} | {server.name:24} | {cpu:10.1f} | {rate:8,.0f} "
                f"| {cpu / p_cpu:9.2f}x | {rate / p_rate:11.2f}x |"
            )


def print_paired(jobs: list[Job], results: dict[tuple[str, str], list[Run]]) -> None:
    """CPU per request as the median of each round's ratio: both sides of a round share the
    machine's load at that moment, so on a busy machine these move less than the ratio of
    the medians in the table."""
    print("CPU per request, median of the rounds' ratios:")
    for job in jobs:
        names = [server.name for server, _ in job.servers]
        this = results[(job.name, names[1])]
        ratios = [f"{names[1]} / {names[0]} {paired(this, results[(job.name, names[0])]):.2f}x"]
        ratios += [
            f"{names[1]} / {other} {paired(this, results[(job.name, other)]):.3f}"
            for other in names[2:]
        ]
        print(f"  {job.label}: " + "; ".join(ratios))


def paired(runs: list[Run], others: list[Run]) -> float:
    return statistics.median(
        a.us_per_request / b.us_per_request for a, b in zip(runs, others, strict=True)
    )


def print_transfers(jobs: list[Job], results: dict[tuple[str, str], list[Run]]) -> None:
    print(
        f"| {'job':33} | {'server':24} | {'MB/s':>8} | {'x peer':>7} "
        f"| {'CPU s':>6} | {'RSS MiB: before, peak':>21} |"
    )
    print(f"|{'-' * 35}|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 8}|{'-' * 23}|")
    for job in jobs:
        peer = results[(job.name, job.servers[0][0].name)]
        p_rate = median(peer, lambda r: r.rate)
        for server, _ in job.servers:
            runs = results[(job.name, server.name)]
            rate = median(runs, lambda r: r.rate)
            print(
                f"| {job.label:33} | {server.name:24} | {rate:8,.0f} | {rate / p_rate:6.2f}x "
                f"| {median(runs, lambda r: r.cpu):6.2f} "
                f"| {min(r.rss_before for r in runs):10.1f}, "
                f"{max(r.rss for r in runs):9.1f} |"
            )


# --------------------------------------------------------------------------- profiling


def profile(args: argparse.Namespace, jobs: list[Job], big: Path, helpers: list[Server]) -> int:
    """py-spy on this tree's gateway under each job's load; top own and total times."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(spy, os.X_OK):
        raise SystemExit("py-spy is missing: pip install py-spy")
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        for server, target in job.servers:
            if not server.name.startswith("gateway (this)"):
                continue
            raw = out / f"http-{job.name}.txt"
            pid = str(server.proc.pid)
            spy_proc = subprocess.Popen(
                [spy, "record", "--pid", pid, "--rate", "500", "--format", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            if job.kind == "wrk":
                run = wrk(server, target, args.duration, args.connections, helpers)
                figure = f"{run.rate:,.0f} req/s under the profiler"
            else:
                run = curl(server, target, big if job.kind == "upload" else None, helpers)
                figure = f"{run.rate:,.0f} MB/s under the profiler"
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait(60)
            summary = summarize(raw)
            (out / f"http-{job.name}.summary.txt").write_text(summary)
            print(f"== {job.name} ({figure}); collapsed stacks: {raw}\n{summary}")
    return 0


def summarize(raw: Path, top: int = 25) -> str:
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [f for f in stack.split(";") if f]
        frames = [re.sub(r"^(\S+) \(([^:]+):\d+\)$", r"\1 (\2)", f) for f in frames]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = [f"{samples} samples", "own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / samples:6.1%}  {frame}")
    lines.append("total time:")
    for frame, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / samples:6.1%}  {frame}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="TREE",
        help="another checkout's gateway in the same run (repeatable)",
    )
    parser.add_argument(
        "--only",
        default="proxy,static,healthz,download,upload,bigstatic",
        help="comma-separated jobs (default: all)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy each job on this tree instead")
    parser.add_argument("--no-install", action="store_true", help="never apt-get nginx-light")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return sink_main(args.sink)
    for tool in ("wrk", "curl", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: apt-get install {tool}")
    ensure_nginx(not args.no_install)
    trees = {"this": REPO}
    for i, other in enumerate(args.against):
        trees["before" if i == 0 else f"other{i}"] = Path(other).resolve()
    return measure(args, trees)


if __name__ == "__main__":
    sys.exit(main())
