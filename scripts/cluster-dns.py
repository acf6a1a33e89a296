#!/usr/bin/env python3
"""The test cluster's Service records for dnsmasq (scripts/kube-up.sh): watches the Services
through the API server, as a cluster DNS does, and keeps FILE as a hosts file of
`<clusterIP> <name>.<namespace>.svc.cluster.local`, replaced whole so dnsmasq rereads it.
One watch, not a poll, so it costs the API server next to nothing (and its requests carry
their own User-Agent in the audit log).

usage: cluster-dns.py API_URL CA_FILE TOKEN FILE
"""
import json
import os
import ssl
import sys
import time
import urllib.request

api, ca, token, out = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
headers = {"Authorization": f"Bearer {token}", "User-Agent": "probity-test-cluster-dns"}


def get(path, timeout):
    req = urllib.request.Request(api + path, headers=headers)
    return urllib.request.urlopen(req, context=ctx, timeout=timeout)


def record(svc):
    ip = svc.get("spec", {}).get("clusterIP", "")
    meta = svc["metadata"]
    name = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    return name, (ip if ip and ip != "None" else None)


def write(records):
    tmp = os.path.join(os.path.dirname(out), ".services.new")
    with open(tmp, "w") as f:
        for name, ip in sorted(records.items()):
            f.write(f"{ip} {name}\n")
    os.replace(tmp, out)


while True:
    try:
        with get("/api/v1/services", 30) as r:
            listing = json.load(r)
        records = {}
        for svc in listing["items"]:
            name, ip = record(svc)
            if ip:
                records[name] = ip
        write(records)
        version = listing["metadata"]["resourceVersion"]
        path = f"/api/v1/services?watch=1&resourceVersion={version}&timeoutSeconds=300"
        with get(path, 330) as stream:
            for line in stream:
                event = json.loads(line)
                if event["type"] == "ERROR":
                    break
                name, ip = record(event["object"])
                if event["type"] == "DELETED" or not ip:
                    records.pop(name, None)
                else:
                    records[name] = ip
                write(records)
    except Exception as e:  # the API server restarting, a closed watch: list again
        print(f"cluster-dns: {e}", file=sys.stderr, flush=True)
        time.sleep(1)
