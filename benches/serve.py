#!/usr/bin/env python3
"""`imageql serve` under load: memory that stays flat, and dashboards that cost the API once.

Starts `imageql sandbox` (with the real API's limit of 20 image lists a minute) and
`imageql serve` against it, then:

1. churn: 1 000 cycles of connect, one query, close, one after another; the server's RSS after
   the first 50 cycles and after all of them, and each cycle's latency;
2. dashboards: 200 connections at once, each running the panels of examples/dashboard.sql;
   latency per panel, errors, the server's peak and final RSS, and the API requests the
   sandbox received, against those of a single connection running the panels on a fresh
   server (the shared cache should make them equal).

Prints Markdown tables. Run it from the repository on a release build:

    cargo build --release
    python3 benches/serve.py

Only the Python standard library is needed: the client below speaks the Postgres wire
protocol's simple query flow itself, so that a thousand connections cost the client little.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time

TOKEN = "sandbox-token"
CHURN_QUERY = "SELECT count(*) FROM images.images WHERE NOT is_public"


def panels(path):
    """The dashboard's queries: the file's statements, comments left out."""
    with open(path) as f:
        text = f.read()
    statements = [s.strip() for s in text.split(";")]
    return [s for s in statements if any(line and not line.startswith("--") for line in s.splitlines())]


class Pg:
    """A Postgres connection: startup, cleartext password, simple queries."""

    def __init__(self, port, password):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        body = struct.pack("!i", 196608) + b"user\0bench\0database\0linode\0\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        kind, payload = self.read()
        if kind != b"R":
            raise RuntimeError(f"login: {payload!r}")
        secret = password.encode() + b"\0"
        self.sock.sendall(b"p" + struct.pack("!i", len(secret) + 4) + secret)
        self.until_ready()

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("the server closed the connection")
            data += chunk
        return data

    def read(self):
        head = self.read_exact(5)
        length = struct.unpack("!i", head[1:])[0]
        return head[:1], self.read_exact(length - 4)

    def until_ready(self):
        """Messages up to ReadyForQuery; raises on an ErrorResponse."""
        error = None
        rows = 0
        while True:
            kind, payload = self.read()
            if kind == b"E":
                error = payload
            elif kind == b"D":
                rows += 1
            elif kind == b"Z":
                if error:
                    raise RuntimeError(error.decode(errors="replace"))
                return rows

    def query(self, sql):
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        return self.until_ready()

    def close(self):
        self.sock.sendall(b"X" + struct.pack("!i", 4))
        self.sock.close()


class Process:
    def __init__(self, args):
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.first_line = self.process.stdout.readline().strip()

    def status(self, field):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self):
        self.process.kill()
        self.process.wait()


def start(imageql, log):
    sandbox = Process([imageql, "sandbox", "--listen", "127.0.0.1:0", "--access-log", log, "--rate-limit-list", "20"])
    server = Process([imageql, "serve", "--listen", "127.0.0.1:0", "--api-url", sandbox.first_line,
                      "--max-connections", "400"])
    port = int(server.first_line.rsplit(":", 1)[1].split("/")[0])
    return sandbox, server, port


def requests(log):
    """API requests the sandbox logged (logins' token checks apart), and how many were 429s."""
    try:
        with open(log) as f:
            entries = [json.loads(line) for line in f]
    except FileNotFoundError:
        entries = []
    entries = [e for e in entries if e["path"] != "/v4/profile"]
    return len(entries), sum(1 for e in entries if e["status"] == 429)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def churn(imageql, cycles):
    with tempfile.TemporaryDirectory() as d:
        sandbox, server, port = start(imageql, os.path.join(d, "access.log"))
        try:
            latencies, warm = [], None
            for i in range(cycles):
                started = time.perf_counter()
                conn = Pg(port, TOKEN)
                conn.query(CHURN_QUERY)
                conn.close()
                latencies.append(time.perf_counter() - started)
                if i == 49:
                    time.sleep(0.2)
                    warm = server.status("VmRSS")
            time.sleep(0.5)
            final = server.status("VmRSS")
            return {"cycles": cycles, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                    "warm": warm, "final": final, "peak": server.status("VmHWM")}
        finally:
            server.close()
            sandbox.close()


def dashboards(imageql, queries, connections):
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "one.log")
        sandbox, server, port = start(imageql, log)
        try:
            conn = Pg(port, TOKEN)
            for q in queries:
                conn.query(q)
            conn.close()
            time.sleep(0.3)
            one = requests(log)
        finally:
            server.close()
            sandbox.close()
        log = os.path.join(d, "many.log")
        sandbox, server, port = start(imageql, log)
        latencies, errors, lock = [], [], threading.Lock()
        barrier = threading.Barrier(connections)

        def board():
            try:
                conn = Pg(port, TOKEN)
                barrier.wait()
                for q in queries:
                    started = time.perf_counter()
                    conn.query(q)
                    with lock:
                        latencies.append(time.perf_counter() - started)
                conn.close()
            except Exception as e:  # a failed panel is a result, not a crash of the benchmark
                with lock:
                    errors.append(str(e))
                try:
                    barrier.abort()
                except threading.BrokenBarrierError:
                    pass

        try:
            started = time.perf_counter()
            threads = [threading.Thread(target=board) for _ in range(connections)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            time.sleep(0.5)
            many = requests(log)
            return {"connections": connections, "panels": len(latencies), "errors": errors, "wall": wall,
                    "p50": percentile(latencies, 0.5) if latencies else float("nan"),
                    "p99": percentile(latencies, 0.99) if latencies else float("nan"),
                    "peak": server.status("VmHWM"), "final": server.status("VmRSS"),
                    "one": one, "many": many}
        finally:
            server.close()
            sandbox.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imageql", default="target/release/imageql")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--dashboard", default="examples/dashboard.sql")
    args = parser.parse_args()
    queries = panels(args.dashboard)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {args.imageql}\n")

    c = churn(args.imageql, args.cycles)
    print("| churn | cycles | p50 | p99 | RSS after 50 | RSS after all | final / after 50 | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| connect, `{CHURN_QUERY}`, close | {c['cycles']} | {c['p50'] * 1000:.1f} ms | {c['p99'] * 1000:.1f} ms "
          f"| {c['warm']:.0f} MiB | {c['final']:.0f} MiB | {c['final'] / c['warm']:.2f}× | {c['peak']:.0f} MiB |\n")

    b = dashboards(args.imageql, queries, args.connections)
    print("| dashboards | connections | panels run | errors | wall | p50 | p99 | peak RSS | RSS after | "
          "API requests (429) | one connection's (429) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {len(queries)} panels each, at once | {b['connections']} | {b['panels']} | {len(b['errors'])} "
          f"| {b['wall']:.2f} s | {b['p50'] * 1000:.0f} ms | {b['p99'] * 1000:.0f} ms | {b['peak']:.0f} MiB "
          f"| {b['final']:.0f} MiB | {b['many'][0]} ({b['many'][1]}) | {b['one'][0]} ({b['one'][1]}) |")
    if b["errors"]:
        print("\nerrors:", *sorted(set(b["errors"]))[:5], sep="\n  ")


if __name__ == "__main__":
    main()
