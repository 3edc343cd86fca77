"""A moto server (DynamoDB, SQS, Secrets Manager on one port) that handles one request at a time.

moto serves requests on several threads without a lock, so two conditional writes racing each
other can both succeed there, which real DynamoDB never allows. The tests race conditional
writes on purpose, so this server serializes requests: each one is atomic, as in AWS.

Usage: python tests/moto_server.py PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), serialized, threaded=True, request_handler=MotoRequestHandler)
