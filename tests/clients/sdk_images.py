"""Drives the official Python SDK (linode_api4) against a sandbox and prints what it saw as
one JSON object. Usage: sdk_images.py BASE_URL TOKEN IMAGE_GZ"""

import json
import sys

from linode_api4 import Image, LinodeClient
from linode_api4.errors import ApiError
from linode_api4.objects.filtering import order_by

base_url, token, image_path = sys.argv[1:4]
client = LinodeClient(token, base_url=base_url)
out = {}

# Combined filters and ordering (the SDK puts the sort inside "+and").
private_large = client.images((Image.is_public == False) & (Image.size > 2000), order_by(Image.size, desc=True))
out["private_large"] = [[i.id, i.size] for i in private_large]
either = client.images((Image.label == "ci-runner") | (Image.vendor == "Slackware"))
out["either"] = sorted(i.id for i in either)
out["tagged"] = sorted(i.id for i in client.images(Image.tags == "golden"))

image = client.load(Image, "private/1002")
out["loaded"] = [image.label, image.status, [r.region for r in image.regions]]
try:
    client.load(Image, "private/999999")
    out["missing"] = None
except ApiError as e:
    out["missing"] = [e.status, e.errors]

with open(image_path, "rb") as data:
    uploaded = client.images.upload("sdk-upload", "us-east", data, description="via linode_api4", tags=["sdk-tag"])
out["uploaded"] = {
    "id": uploaded.id,
    "status": uploaded.status,
    "size": uploaded.size,
    "tags": uploaded.tags,
    "regions": [[r.region, r.status] for r in uploaded.regions],
}

uploaded.label = "sdk-upload-renamed"
uploaded.save()
out["renamed"] = client.load(Image, uploaded.id).label
uploaded.delete()
try:
    client.load(Image, uploaded.id)
    out["deleted"] = False
except ApiError as e:
    out["deleted"] = e.status == 404

print(json.dumps(out))
