#!/usr/bin/env python3
"""Writes an OCI image layout of N small uncompressed layers (layer k adds /layer<k>
holding "k" and /d<k>/f) to OUT, plus the plain layer tars as OUT/layers/<k>.tar.
Usage: make-oci-stack.py OUT N"""
import hashlib, io, json, os, sys, tarfile

out, n = sys.argv[1], int(sys.argv[2])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
os.makedirs(os.path.join(out, "layers"), exist_ok=True)

def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d

def layer_tar(k):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data=None, dir=False):
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if dir:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            else:
                ti.mode, ti.size = 0o644, len(data)
                t.addfile(ti, io.BytesIO(data))
        add(f"layer{k}", str(k).encode())
        add(f"d{k}", dir=True)
        add(f"d{k}/f", b"x" * 100)
    return buf.getvalue()

layers, diff_ids = [], []
for k in range(n):
    data = layer_tar(k)
    with open(os.path.join(out, "layers", f"{k}.tar"), "wb") as f:
        f.write(data)
    dg = put(data)
    diff_ids.append(dg)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": len(data)})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": put(config), "size": len(config)},
                       "layers": layers}).encode()
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           "digest": put(manifest), "size": len(manifest)}]}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
