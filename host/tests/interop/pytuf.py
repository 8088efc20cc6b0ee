#!/usr/bin/env python3
"""python-tuf (PyPI `tuf`) on the other side of our TUF repository (#15).

  pytuf.py client  --root ROOT --metadata-url U --targets-url U --ca CA
                   --target NAME --out DIR
      python-tuf's ngclient refreshes from our server and downloads NAME;
      prints JSON {"length", "sha256", "custom"} of what it verified.
  pytuf.py publish --repo DIR --module FILE --name NAME --custom JSON
      writes a consistent-snapshot repository with python-tuf's Metadata
      API (four Ed25519 keys, one per role) into DIR/metadata and
      DIR/targets, with FILE as target NAME carrying JSON as its custom
      metadata under "outpost".

Exit status 0 on success; anything python-tuf refuses is an exception
(exit status 1, the reason on stderr).
"""
import argparse
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone


def client(a):
    import urllib3
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface, Updater

    class CaFetcher(FetcherInterface):
        """urllib3 with the test CA: verification stays on."""

        def __init__(self, ca):
            self.pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca)

        def _fetch(self, url):
            r = self.pool.request(
                "GET", url, preload_content=False,
                timeout=urllib3.Timeout(connect=10, read=10),
            )
            if r.status != 200:
                r.release_conn()
                raise DownloadHTTPError(f"HTTP {r.status} for {url}", r.status)
            return r.stream(65536)

    meta_dir = os.path.join(a.out, "metadata")
    os.makedirs(meta_dir, exist_ok=True)
    with open(a.root, "rb") as f:
        root = f.read()
    up = Updater(
        metadata_dir=meta_dir,
        metadata_base_url=a.metadata_url,
        target_dir=a.out,
        target_base_url=a.targets_url,
        fetcher=CaFetcher(a.ca),
        bootstrap=root,
    )
    up.refresh()
    info = up.get_targetinfo(a.target)
    if info is None:
        raise SystemExit(f"target {a.target} is not in the repository")
    path = up.download_target(info, os.path.join(a.out, "download.bin"))
    with open(path, "rb") as f:
        data = f.read()
    print(json.dumps({
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "custom": info.custom,
    }))


def publish(a):
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import (
        Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp,
    )
    from tuf.api.serialization.json import JSONSerializer

    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
    signers = {r: CryptoSigner.generate_ed25519() for r in ("root", "targets", "snapshot", "timestamp")}
    root = Root(expires=expires, consistent_snapshot=True)
    for role, s in signers.items():
        root.add_key(s.public_key, role)
    with open(a.module, "rb") as f:
        data = f.read()
    target = TargetFile.from_data(a.name, data, ["sha256"])
    target.unrecognized_fields["custom"] = {"outpost": json.loads(a.custom)}
    targets = Targets(expires=expires)
    targets.targets[a.name] = target

    meta = os.path.join(a.repo, "metadata")
    tdir = os.path.join(a.repo, "targets")
    os.makedirs(meta, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    ser = JSONSerializer(compact=False)

    def write(md, role, name):
        md.sign(signers[role])
        raw = md.to_bytes(ser)
        with open(os.path.join(meta, name), "wb") as f:
            f.write(raw)
        return raw

    write(Metadata(root), "root", "1.root.json")
    t_raw = write(Metadata(targets), "targets", "1.targets.json")
    snapshot = Snapshot(expires=expires)
    snapshot.meta["targets.json"] = MetaFile(
        version=1, length=len(t_raw), hashes={"sha256": hashlib.sha256(t_raw).hexdigest()}
    )
    s_raw = write(Metadata(snapshot), "snapshot", "1.snapshot.json")
    timestamp = Timestamp(expires=expires)
    timestamp.snapshot_meta = MetaFile(
        version=1, length=len(s_raw), hashes={"sha256": hashlib.sha256(s_raw).hexdigest()}
    )
    write(Metadata(timestamp), "timestamp", "timestamp.json")
    with open(os.path.join(tdir, f"{hashlib.sha256(data).hexdigest()}.{a.name}"), "wb") as f:
        f.write(data)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    for arg in ("--root", "--metadata-url", "--targets-url", "--ca", "--target", "--out"):
        c.add_argument(arg, required=True)
    pub = sub.add_parser("publish")
    for arg in ("--repo", "--module", "--name", "--custom"):
        pub.add_argument(arg, required=True)
    a = p.parse_args()
    (client if a.cmd == "client" else publish)(a)


if __name__ == "__main__":
    sys.exit(main())
