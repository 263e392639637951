"""Deploys, rebuilds and deletes an instance with the official Python SDK (linode_api4) against
a sandbox and prints what it saw as one JSON object. Usage: sdk_deploy.py BASE_URL TOKEN"""

import json
import sys
import time

from linode_api4 import Instance, LinodeClient
from linode_api4.errors import ApiError

base_url, token = sys.argv[1:3]
client = LinodeClient(token, base_url=base_url)
out = {}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl6c2FuZGJveGtleWZvcnRlc3RzMDAwMDAwMDAw test@sandbox"


def wait_running(instance, seconds=30):
    deadline = time.time() + seconds
    while True:
        instance.invalidate()
        if instance.status == "running":
            return instance.status
        if time.time() > deadline:
            return "still " + instance.status
        time.sleep(0.1)


# The image has a copy in us-ord only: elsewhere the API refuses it.
try:
    client.linode.instance_create("g6-standard-1", "ap-west", image="private/1003", authorized_keys=KEY)
    out["elsewhere"] = None
except ApiError as e:
    out["elsewhere"] = [e.status, e.errors]

created = client.linode.instance_create(
    "g6-standard-1", "us-ord", image="private/1003", label="sdk-web", root_pass="Sdk-secret-pass-1", tags=["sdk"]
)
out["created"] = [created.label, created.status, created.image.id, created.region.id, created.tags]
out["running"] = wait_running(created)
out["disks"] = sorted([d.filesystem, d.size] for d in created.disks)

created.rebuild("linode/debian12", authorized_keys=KEY)
out["rebuilding"] = client.load(Instance, created.id).status
out["rebuilt"] = [wait_running(created), client.load(Instance, created.id).image.id]

# A disk from an image, on an instance made without one (so with its whole disk free).
bare = client.linode.instance_create("g6-nanode-1", "us-ord", label="sdk-bare")
disk = bare.disk_create(size=4000, label="sdk-data", image="linode/debian12", authorized_keys=KEY)
out["disk"] = [disk.label, disk.size, disk.filesystem]
try:
    bare.disk_create(size=100000, label="too-big")
except ApiError as e:
    out["too_big"] = e.status

created.label = "sdk-web-renamed"
created.save()
out["renamed"] = client.load(Instance, created.id).label

events = client.account.events()
out["events"] = sorted({e.action for e in events if e.entity and e.entity.id in (created.id, bare.id)})
newest = events[0]
newest.mark_seen()
out["seen"] = client.account.events()[0].seen

created.delete()
try:
    client.load(Instance, created.id)
    out["deleted"] = False
except ApiError as e:
    out["deleted"] = e.status == 404
print(json.dumps(out))
