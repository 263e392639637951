#!/usr/bin/env python3
"""Scans at the speed of the network: imageql against linode-cli and a sequential pager.

Starts `imageql sandbox --seed-images N --latency-ms L` and times whole processes (wall time,
CPU, peak RSS from /usr/bin/time -v; requests, bytes and 429 answers from the sandbox's access
log), the median of several runs each, and prints Markdown tables:

1. speed, with the sandbox's rate limit off: imageql full scan, count(*), a selective query,
   the same query twice in one process; linode-cli `images list --all-rows --json`; a
   sequential pager (one page at a time, page_size 100, as StackQL and Steampipe do); and
   the bound 2·L + the full scan's own time at latency 0;
2. under the real API's limit (20 image lists a minute): requests, 429s and wall time;
3. scale: count(*) and GROUP BY at N and at 10·N images, and the sandbox's own memory.

Run it from the repository on a release build:

    cargo build --release
    python3 benches/scan.py --linode-cli PATH/TO/linode-cli

Only the Python standard library is needed; linode-cli is optional (its rows are left out
without it).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "sandbox-token"
FULL = "SELECT * FROM linode.images.images"
COUNT = "SELECT count(*) FROM linode.images.images"
GROUP = "SELECT status, type, count(*), sum(size) FROM linode.images.images GROUP BY status, type"


class Sandbox:
    """A sandbox process and its access log."""

    def __init__(self, imageql, images, latency, rate_limit):
        self.dir = tempfile.TemporaryDirectory()
        self.log = os.path.join(self.dir.name, "access.log")
        args = [imageql, "sandbox", "--listen", "127.0.0.1:0", "--access-log", self.log,
                "--seed-images", str(images), "--latency-ms", str(latency)]
        if rate_limit is not None:
            args += ["--rate-limit-list", str(rate_limit)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        self.origin = self.url[: -len("/v4")]

    def entries(self):
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def peak_rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self):
        self.process.kill()
        self.process.wait()
        self.dir.cleanup()


def timed(command, env):
    """Runs a command under /usr/bin/time -v: (wall s, CPU s, peak RSS MiB, exit code)."""
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", "-o", report.name] + command, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        fields = {}
        for line in report.read().splitlines():
            key, _, value = line.strip().rpartition(": ")
            fields[key] = value
    cpu = float(fields.get("User time (seconds)", "nan")) + float(fields.get("System time (seconds)", "nan"))
    rss = int(fields.get("Maximum resident set size (kbytes)", "0")) / 1024
    if done.returncode != 0:
        print(f"  {' '.join(command[:3])}… exited {done.returncode}: {done.stderr.strip()[-300:]}", file=sys.stderr)
    return wall, cpu, rss, done.returncode, done.stderr


def measure(sandbox, command, env, repeats):
    """Medians over `repeats` runs, with the requests each run made."""
    runs = []
    for _ in range(repeats):
        before = len(sandbox.entries())
        wall, cpu, rss, code, stderr = timed(command, env)
        sent = sandbox.entries()[before:]
        runs.append({
            "wall": wall, "cpu": cpu, "rss": rss, "code": code, "stderr": stderr,
            "requests": len(sent),
            "bytes": sum(e.get("bytes") or 0 for e in sent),
            "throttled": sum(1 for e in sent if e["status"] == 429),
        })
    return {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu", "rss", "requests", "bytes", "throttled")} | {
        "code": max(r["code"] for r in runs), "stderr": runs[-1]["stderr"]}


def page_sequentially(url, token, page_size):
    """The sequential baseline: one page at a time, each decoded before the next is asked for."""
    page, rows = 1, 0
    while True:
        request = urllib.request.Request(f"{url}/images?page={page}&page_size={page_size}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            body = json.load(response)
        rows += len(body["data"])
        if page >= body["pages"]:
            return rows
        page += 1


def imageql(args, sandbox, *statements):
    """An imageql run of `statements` in one process, printing JSON."""
    return [args.imageql, "--api-url", sandbox.url, "-o", "json"] + [a for s in statements for a in ("-e", s)]


def environment(sandbox):
    env = dict(os.environ, LINODE_TOKEN=TOKEN, HOME=tempfile.mkdtemp(), LINODE_CLI_TOKEN=TOKEN,
               LINODE_CLI_API_HOST=sandbox.origin[len("http://"):], LINODE_CLI_API_SCHEME="http",
               LINODE_CLI_SUPPRESS_VERSION_WARNING="1")
    return env


def some_label(sandbox):
    request = urllib.request.Request(f"{sandbox.url}/images?page=2&page_size=25",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["data"][0]["label"]


def row(name, m, reference=None):
    ratio = f"{m['wall'] / reference['wall']:.3f}" if reference else ""
    return (f"| {name} | {m['wall']:.3f} s | {m['cpu']:.2f} s | {m['rss']:.0f} MiB | {m['requests']:.0f} "
            f"| {m['bytes'] / 1e6:.1f} MB | {ratio} |")


def speed(args, out):
    fast = Sandbox(args.imageql, args.images, 0, 0)
    slow = Sandbox(args.imageql, args.images, args.latency_ms, 0)
    try:
        label = some_label(slow)
        selective = f"SELECT * FROM linode.images.images WHERE label = '{label}'"
        env = environment(slow)
        q = lambda *statements: imageql(args, slow, *statements)
        results = {}
        if args.linode_cli:
            results["cli"] = measure(slow, [args.linode_cli, "images", "list", "--all-rows", "--json"], env, args.repeats)
        results["full"] = measure(slow, q(FULL), env, args.repeats)
        results["count"] = measure(slow, q(COUNT), env, args.repeats)
        results["selective"] = measure(slow, q(selective), env, args.repeats)
        results["twice"] = measure(slow, q(FULL, FULL), env, args.repeats)
        results["pager"] = measure(
            slow, [sys.executable, __file__, "--page-sequentially", slow.url, "--page-size", "100"], env, args.repeats)
        local = measure(fast, imageql(args, fast, FULL), environment(fast), args.repeats)
    finally:
        fast.close()
        slow.close()
    reference = results.get("cli")
    out.append(f"### Speed: {args.images} generated images (plus the seed's), latency {args.latency_ms} ms, "
               f"no rate limit; medians of {args.repeats}\n")
    out.append("| what | wall | CPU | peak RSS | requests | bytes | wall ÷ linode-cli |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    names = [("cli", "linode-cli `images list --all-rows --json`"), ("full", f"imageql full scan `{FULL}`"),
             ("count", f"imageql `{COUNT}`"), ("selective", "imageql selective query `WHERE label = …`"),
             ("twice", "imageql the full scan twice in one process"),
             ("pager", "sequential pager, page_size 100")]
    for key, name in names:
        if key in results:
            out.append(row(name, results[key], reference))
    out.append(row("imageql full scan at latency 0 (transfer and decoding)", local, reference))
    bound = 2 * args.latency_ms / 1000 + local["wall"]
    out.append("")
    out.append(f"- bound 2·L + local time = {bound:.3f} s; imageql's full scan takes "
               f"{results['full']['wall'] / bound:.2f}× that")
    if reference:
        out.append(f"- imageql's full scan is {reference['wall'] / results['full']['wall']:.1f}× faster than linode-cli")
    out.append(f"- the sequential pager takes {results['pager']['wall'] / results['full']['wall']:.1f}× imageql's time")
    out.append(f"- the same scan twice in one process makes {results['twice']['requests']:.0f} requests "
               f"(one scan: {results['full']['requests']:.0f})")
    out.append("")


def rate_limited(args, out):
    out.append(f"### Under the real limit: {args.images} images, latency {args.latency_ms} ms, "
               "20 image lists a minute (one run each, a fresh sandbox each)\n")
    out.append("| what | wall | requests | 429 answers | exit |")
    out.append("| --- | --- | --- | --- | --- |")
    runs = [("imageql full scan", lambda s: imageql(args, s, FULL))]
    if args.linode_cli:
        runs.append(("linode-cli `images list --all-rows --json`",
                     lambda s: [args.linode_cli, "images", "list", "--all-rows", "--json"]))
    for name, command in runs:
        sandbox = Sandbox(args.imageql, args.images, args.latency_ms, None)
        try:
            m = measure(sandbox, command(sandbox), environment(sandbox), 1)
        finally:
            sandbox.close()
        out.append(f"| {name} | {m['wall']:.1f} s | {m['requests']:.0f} | {m['throttled']:.0f} | {m['code']} |")
    out.append("")


def scale(args, out):
    out.append(f"### Scale: latency {args.latency_ms} ms, no rate limit; medians of {args.repeats}\n")
    out.append("| images | query | wall | CPU | peak RSS | requests | sandbox peak RSS |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    peaks = {}
    for images in (args.images, args.big_images):
        sandbox = Sandbox(args.imageql, images, args.latency_ms, 0)
        try:
            env = environment(sandbox)
            for name, sql in (("count(*)", COUNT), ("GROUP BY", GROUP)):
                m = measure(sandbox, imageql(args, sandbox, sql), env, args.repeats)
                peaks[(images, name)] = m["rss"]
                out.append(f"| {images} | {name} | {m['wall']:.2f} s | {m['cpu']:.2f} s | {m['rss']:.0f} MiB "
                           f"| {m['requests']:.0f} | {sandbox.peak_rss_mib():.0f} MiB |")
        finally:
            sandbox.close()
    out.append("")
    for name in ("count(*)", "GROUP BY"):
        ratio = peaks[(args.big_images, name)] / peaks[(args.images, name)]
        out.append(f"- {name}: peak RSS at {args.big_images} images is {ratio:.2f}× that at {args.images}")
    out.append("")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--imageql", default=os.path.join(target, "release", "imageql"))
    parser.add_argument("--linode-cli", help="a linode-cli executable (left out when not given)")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--big-images", type=int, default=100000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["speed", "rate-limited", "scale"], action="append")
    parser.add_argument("--page-sequentially", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--page-size", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.page_sequentially:
        page_sequentially(args.page_sequentially, TOKEN, args.page_size)
        return
    out = [f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
           f"Python {platform.python_version()}; imageql {args.imageql}\n"]
    for part, run in (("speed", speed), ("rate-limited", rate_limited), ("scale", scale)):
        if not args.only or part in args.only:
            run(args, out)
            print("\n".join(out), flush=True)
            out = []


if __name__ == "__main__":
    main()
