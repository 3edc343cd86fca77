#!/usr/bin/env python3
"""Verifies a signed webhook with the reference Standard Webhooks library (`standardwebhooks`),
for the tests of the dispatcher's signatures.

Usage: verify_webhook.py SECRET BODY_FILE HEADERS_JSON_FILE. Prints the verified payload's
`deployment_id`, then `changed body refused` when the same headers do not verify the body with
one byte added (or `changed body verified`). Exits non-zero when the webhook does not verify."""
import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError

secret, body_path, headers_path = sys.argv[1:4]
with open(body_path, "rb") as f:
    body = f.read()
with open(headers_path) as f:
    headers = json.load(f)
print(Webhook(secret).verify(body, headers)["deployment_id"])
try:
    Webhook(secret).verify(body + b" ", headers)
    print("changed body verified")
except WebhookVerificationError:
    print("changed body refused")
