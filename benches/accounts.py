#!/usr/bin/env python3
"""Many accounts in one query: imageql's account set against a loop over the accounts.

For each number of accounts (10, 100 and 1 000 by default), starts one sandbox hosting them
all (`--accounts-file`, `--seed-images` each, `--latency-ms L`, the real API's rate limits),
writes an imageql profile per account and a group of them all, and times whole processes
(wall time, CPU and peak RSS from /usr/bin/time -v; requests and 429 answers from the
sandbox's access log):

1. imageql's one query over the group: every private image of every account;
2. a loop of one imageql process per account (`--profile NAME`), the same query;
3. a loop of linode-cli per account (`images list --is_public false --json`), each with its
   token in LINODE_CLI_TOKEN;

and the bound: ceil(accounts / accounts in flight) x 2 x L + imageql's own time for the same
query against a sandbox without latency. It prints Markdown tables.

Run it from the repository on a release build:

    cargo build --release
    python3 benches/accounts.py --linode-cli PATH/TO/linode-cli

Only the Python standard library is needed; linode-cli is optional (its rows are left out
without it). `--loop-limit N` times the loops over the first N accounts only and scales
their time up (marked as such), for quicker runs.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from scan import cpu_model

QUERY = "SELECT account, id, label, size, status FROM linode.images.images WHERE NOT is_public"
# The same query in a session of one account, which has no account column.
ONE_ACCOUNT = "SELECT id, label, size, status FROM linode.images.images WHERE NOT is_public"
# Accounts read at once (scan::accounts::ACCOUNTS_IN_FLIGHT).
IN_FLIGHT = 32


class Sandbox:
    """A sandbox hosting `accounts` accounts of `images` images each, with its access log."""

    def __init__(self, imageql, names, images, latency):
        self.dir = tempfile.TemporaryDirectory()
        self.log = os.path.join(self.dir.name, "access.log")
        accounts = os.path.join(self.dir.name, "accounts")
        with open(accounts, "w") as f:
            f.writelines(f"{name}:tok-{name}\n" for name in names)
        args = [imageql, "sandbox", "--listen", "127.0.0.1:0", "--access-log", self.log,
                "--accounts-file", accounts, "--seed-images", str(images), "--latency-ms", str(latency)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        self.origin = self.url[: -len("/v4")]

    def entries(self):
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def close(self):
        self.process.kill()
        self.process.wait()
        self.dir.cleanup()


def home_for(sandbox, names):
    """A HOME whose imageql config has a profile per account and the group `customers`."""
    home = tempfile.mkdtemp()
    os.makedirs(os.path.join(home, ".config", "imageql"))
    with open(os.path.join(home, ".config", "imageql", "config.toml"), "w") as f:
        for name in names:
            f.write(f'[profiles.{name}]\ntoken = "tok-{name}"\napi_url = "{sandbox.url}"\n\n')
        f.write('[groups.customers]\nprofiles = ["cust*"]\n')
    return home


def timed(commands, env):
    """Runs commands one after another, each under /usr/bin/time -v: (wall s, CPU s, peak RSS MiB)."""
    wall, cpu, rss = 0.0, 0.0, 0.0
    for command, extra in commands:
        with tempfile.NamedTemporaryFile("r") as report:
            started = time.perf_counter()
            done = subprocess.run(["/usr/bin/time", "-v", "-o", report.name] + command, env=dict(env, **extra),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall += time.perf_counter() - started
            fields = {}
            for line in report.read().splitlines():
                key, _, value = line.strip().rpartition(": ")
                fields[key] = value
        if done.returncode != 0:
            print(f"  {' '.join(command[:4])}… exited {done.returncode}: {done.stderr.strip()[-300:]}", file=sys.stderr)
        cpu += float(fields.get("User time (seconds)", "nan")) + float(fields.get("System time (seconds)", "nan"))
        rss = max(rss, int(fields.get("Maximum resident set size (kbytes)", "0")) / 1024)
    return wall, cpu, rss


def measure(sandbox, commands, env, repeats, scale=1.0):
    """Medians over `repeats` runs of the commands, with the requests and 429s each run caused."""
    runs = []
    for _ in range(repeats):
        before = len(sandbox.entries())
        wall, cpu, rss = timed(commands, env)
        sent = sandbox.entries()[before:]
        runs.append({"wall": wall * scale, "cpu": cpu * scale, "rss": rss, "requests": len(sent) * scale,
                     "throttled": sum(1 for e in sent if e["status"] == 429)})
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def imageql(args, *extra, query=QUERY):
    return [args.imageql, "-o", "json", *extra, "-e", query]


def one_size(args, accounts, out):
    names = [f"cust{i:05d}" for i in range(1, accounts + 1)]
    looped = names[: args.loop_limit] if args.loop_limit else names
    scale = len(names) / len(looped)
    marked = f" ({len(looped)} run, scaled ×{scale:.0f})" if scale > 1 else ""
    results = []

    idle = Sandbox(args.imageql, names, args.images, 0)
    env = dict(os.environ, HOME=home_for(idle, names), LINODE_CLI_SUPPRESS_VERSION_WARNING="1")
    env.pop("LINODE_TOKEN", None)
    own = measure(idle, [(imageql(args, "--profile", "customers"), {})], env, args.repeats)
    idle.close()

    sandbox = Sandbox(args.imageql, names, args.images, args.latency_ms)
    env["HOME"] = home_for(sandbox, names)
    one = measure(sandbox, [(imageql(args, "--profile", "customers"), {})], env, args.repeats)
    results.append(("imageql, one query over the set (`--profile customers`)", one))
    loop = [(imageql(args, "--profile", name, query=ONE_ACCOUNT), {}) for name in looped]
    results.append((f"a loop of imageql per account{marked}", measure(sandbox, loop, env, 1, scale)))
    if args.linode_cli:
        cli_env = dict(LINODE_CLI_API_HOST=sandbox.origin[len("http://"):], LINODE_CLI_API_SCHEME="http")
        cli = [([args.linode_cli, "images", "list", "--is_public", "false", "--json"],
                dict(cli_env, LINODE_CLI_TOKEN=f"tok-{name}")) for name in looped]
        results.append((f"a loop of linode-cli per account{marked}", measure(sandbox, cli, env, 1, scale)))
    sandbox.close()

    bound = math.ceil(accounts / IN_FLIGHT) * 2 * args.latency_ms / 1000 + own["wall"]
    out.append(f"### {accounts} accounts × {args.images} images, latency {args.latency_ms} ms\n")
    out.append("| what | wall | CPU | peak RSS | requests | 429s | wall ÷ one query |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, m in results:
        out.append(f"| {name} | {m['wall']:.2f} s | {m['cpu']:.2f} s | {m['rss']:.0f} MiB | {m['requests']:.0f} "
                   f"| {m['throttled']:.0f} | {m['wall'] / one['wall']:.1f} |")
    out.append(f"| bound: ⌈{accounts} ÷ {IN_FLIGHT}⌉ × 2 × {args.latency_ms} ms + own time at latency 0 "
               f"({own['wall']:.2f} s) | {bound:.2f} s | | | | | |")
    out.append("")
    out.append(f"- the one query takes {one['wall'] / bound:.2f}× the bound")
    out.append("")
    return one


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--imageql", default=os.path.join(target, "release", "imageql"))
    parser.add_argument("--linode-cli", help="a linode-cli executable (left out when not given)")
    parser.add_argument("--accounts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-limit", type=int, help="time the loops over this many accounts and scale up")
    args = parser.parse_args()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}; imageql {args.imageql}\n", flush=True)
    peaks = {}
    for accounts in args.accounts:
        out = []
        peaks[accounts] = one_size(args, accounts, out)["rss"]
        print("\n".join(out), flush=True)
    if len(peaks) > 1:
        smallest, largest = min(peaks), max(peaks)
        print(f"- peak RSS of the one query at {largest} accounts is {peaks[largest] / peaks[smallest]:.2f}× "
              f"that at {smallest}")


if __name__ == "__main__":
    main()
