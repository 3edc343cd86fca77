#!/usr/bin/env python3
"""A deploy endpoint for a WEBHOOK target: verifies the signature, then deploys. `pip install
standardwebhooks`; WEBHOOK_SECRET is the `whsec_…` the target's PUT answered."""
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks import Webhook

hook = Webhook(os.environ["WEBHOOK_SECRET"])

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            deployment = hook.verify(body, dict(self.headers))  # webhook-id / -timestamp / -signature
        except Exception:
            self.send_response(401), self.end_headers()
            return
        print("deploy", deployment["service_id"], deployment["git_commit_id"] or deployment["image_tag"], flush=True)
        self.send_response(202), self.end_headers()  # any 2xx: DELIVERED; 5xx: retried; 4xx: FAILED

HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Receiver).serve_forever()
