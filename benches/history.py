#!/usr/bin/env python3
"""A year of hourly recordings: the history store's size, a recording's cost and its queries.

Starts `imageql sandbox --seed-images N --time-scale 0` and walks its clock through a year,
an hour at a time: each hour `imageql record` runs, and once a day 1 % of the images are
relabelled (through the API). Prints, month by month, the recordings and changes so far
against the store's size (it should follow the changes, not the recordings), then the time
and requests of a recording of an unchanged account, and the time of
`linode.history.changes()` over the whole year and of `images_at()` of a random hour (whole
processes, medians of 5).

Run it from the repository on a release build:

    cargo build --release
    python3 benches/history.py            # --days 365 --images 1000

Only the Python standard library is needed.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from scan import cpu_model

TOKEN = "sandbox-token"


def api(url, method, path, body=None):
    request = urllib.request.Request(f"{url}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def store_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def timed(command, env, repeats=5):
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command[:6])}… failed: {done.stderr.strip()[-400:]}")
    return statistics.median(walls)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--imageql", default=os.path.join(target, "release", "imageql"))
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.TemporaryDirectory()
    log = os.path.join(work.name, "access.log")
    store = os.path.join(work.name, "history")
    sandbox = subprocess.Popen([args.imageql, "sandbox", "--listen", "127.0.0.1:0", "--token", TOKEN,
                                "--seed-images", str(args.images), "--time-scale", "0", "--rate-limit-list", "0",
                                "--max-images", str(args.images * 2), "--access-log", log],
                               stdout=subprocess.PIPE, text=True)
    url = sandbox.stdout.readline().strip()
    origin = url[: -len("/v4")]
    env = dict(os.environ, LINODE_TOKEN=TOKEN, HOME=work.name)
    record = [args.imageql, "--api-url", url, "--history", store, "--no-cache", "record"]
    ids = [i["id"] for i in api(url, "GET", "/images?page_size=500")["data"] if not i["is_public"]]
    page = 2
    while len(ids) < args.images:
        ids += [i["id"] for i in api(url, "GET", f"/images?page_size=500&page={page}")["data"] if not i["is_public"]]
        page += 1
    rng = random.Random(42)
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; imageql {args.imageql}\n")
    print(f"{args.days} days of hourly recordings of {len(ids)} private images, 1 % relabelled a day\n")
    print("| day | recordings | changes | store | files |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    started_at = api(origin, "GET", "/sandbox/clock")["now"]
    recordings = changes = 0
    moments = []
    for day in range(args.days):
        for hour in range(24):
            if hour == 12:
                for image in rng.sample(ids, max(1, len(ids) // 100)):
                    path = f"/images/{urllib.parse.quote(image, safe='')}"
                    try:
                        api(url, "PUT", path, {"label": f"d{day}-{rng.randrange(10**6)}"})
                        changes += 1
                    except urllib.error.HTTPError as e:
                        # Recovery images expire as the clock goes by: gone, not changed.
                        if e.code != 404:
                            raise
                        ids.remove(image)
            subprocess.run(record, env=env, stdout=subprocess.DEVNULL, check=True)
            recordings += 1
            moments.append(api(origin, "POST", "/sandbox/clock", {"advance_seconds": 3600})["now"])
        if (day + 1) % 30 == 0 or day + 1 == args.days:
            files = sum(len(f) for _, _, f in os.walk(store))
            print(f"| {day + 1} | {recordings} | {changes} | {store_bytes(store) / 1e6:.2f} MB | {files} |", flush=True)
    ended_at = api(origin, "GET", "/sandbox/clock")["now"]
    before = sum(1 for _ in open(log))
    unchanged = timed(record, env)
    requests = (sum(1 for _ in open(log)) - before) / 5
    query = [args.imageql, "--api-url", url, "--history", store, "-o", "json", "-e"]
    year = timed(query + [f"SELECT change, count(*) FROM linode.history.changes('{started_at}', '{ended_at}') GROUP BY change"], env)
    at = timed(query + [f"SELECT count(*) FROM linode.history.images_at('{rng.choice(moments)}')"], env)
    print()
    print(f"- store after {recordings} recordings and {changes} changes: {store_bytes(store) / 1e6:.2f} MB")
    print(f"- a recording of the unchanged account: {unchanged:.3f} s, {requests:.0f} requests")
    print(f"- changes() over the whole period: {year:.3f} s; images_at() of a random hour: {at:.3f} s")
    sandbox.kill()


if __name__ == "__main__":
    main()
