#!/usr/bin/env python3
"""A pull consumer for the standalone server: lease (long poll), deploy, acknowledge, report.

    AUTODEPLOY_URL=http://127.0.0.1:8080 AUTODEPLOY_ORG=acme AUTODEPLOY_TOKEN=<consume token> \
        python3 examples/consumer.py -- ./deploy.sh

The deploy command gets the deployment (SPEC's JSON) on stdin; exit status 0 is SUCCEEDED.
A deployment may come twice (a lease that ran out is offered again): drop ids already applied.
"""
import json, os, subprocess, sys, urllib.request

URL, ORG, TOKEN = os.environ.get("AUTODEPLOY_URL", "http://127.0.0.1:8080"), os.environ["AUTODEPLOY_ORG"], os.environ["AUTODEPLOY_TOKEN"]
until_idle = "--until-idle" in sys.argv  # stop once a lease comes back empty (for scripts and tests)
command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else ["cat"]

def call(path, body):
    request = urllib.request.Request(f"{URL}/organization/{ORG}/deployments{path}", json.dumps(body).encode(),
                                     {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"null")

while True:
    leased = call("/lease", {"max": 1, "lease_seconds": 600, "wait_seconds": 1 if until_idle else 20})["items"]
    if not leased and until_idle:
        break
    for deployment in leased:
        done = subprocess.run(command, input=json.dumps(deployment).encode())
        call(f"/{deployment['deployment_id']}/ack", {"lease_id": deployment["lease_id"]})
        call(f"/{deployment['deployment_id']}/result", {"status": "SUCCEEDED" if done.returncode == 0 else "FAILED",
                                                        "message": f"{command[0]} exited with {done.returncode}"})
