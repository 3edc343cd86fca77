#!/usr/bin/env python3
"""Every answer of the standalone server, checked against its OpenAPI document.

Usage: openapi_conformance.py BINARY REPO_ROOT [--document PATH]

Starts the `autodeploy` binary on fresh SQLite databases (in a temporary directory removed at
the end) and drives every operation of infra/openapi.yaml, success and error cases: signed
webhook fixtures of every git provider and registry, deploy targets, services, tokens, the
consumers' lease / extend / ack / nack / result flow, the deliveries history. Each real answer
must be one the document describes for its operation:

- its status is documented (a 413 or 503 from the server's body buffer is allowed on any
  route, as the document's description says);
- its body validates against the response schema (JSON Schema 2020-12, `$ref`s resolved in
  the document, `date-time` as RFC 3339) and has no property the schema does not declare;
- its documented headers are present when required and valid, and no notable header
  (`ETag`, `Retry-After`, `Location`, `Allow`, ...) is sent undocumented;
- its Content-Type is documented, and an answer documented without content has no body;
- an error's code fits its status; a 405 lists the path's documented methods in `Allow`;
- a request the server accepted satisfies the documented request schema.

Also: the document's examples validate against their schemas and the server takes its request
examples; `GET /openapi.yaml` serves the file byte for byte; every operation is exercised. Two
more servers provoke the answers a plain scenario cannot: one with a 1 MiB body buffer (413 on
any route, 503 while request bodies held open by this script fill it) and one on a database
whose rows this script corrupted (500).

Exits 1 with one line per mismatch on stdout when any check fails.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import requests
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from requests.structures import CaseInsensitiveDict

ADMIN = "conformance-admin-token-0123456789"
ORG = "acme"
OTHER = "other-org"
O = f"/organization/{ORG}"
KIB = 1024
MIB = 1024 * KIB

# Error codes per status, as the document's description pairs them.
CODES = {
    400: {"MALFORMED_BODY", "VALIDATION_FAILED", "MALFORMED_REQUEST"}, 401: {"UNAUTHORIZED"},
    403: {"FORBIDDEN"}, 404: {"NOT_FOUND"}, 405: {"METHOD_NOT_ALLOWED"}, 409: {"CONFLICT"},
    412: {"PRECONDITION_FAILED"}, 413: {"PAYLOAD_TOO_LARGE"}, 414: {"URI_TOO_LONG"},
    415: {"UNSUPPORTED_MEDIA_TYPE"}, 431: {"HEADERS_TOO_LARGE"}, 500: {"INTERNAL"},
    503: {"UNAVAILABLE"},
}
# The standalone server's body buffer may answer these on any route (the document's
# description says so); the shared response of components/responses describes them.
ANY_ROUTE = {413: "PayloadTooLarge", 503: "Unavailable"}
# Headers a client acts on: the document must describe them where they are sent.
NOTABLE_HEADERS = ["etag", "retry-after", "location", "allow", "www-authenticate", "link"]
METHODS = ("get", "put", "post", "patch", "delete")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker()


@FORMATS.checks("date-time")
def _date_time(value):
    return not isinstance(value, str) or bool(RFC3339.match(value))


def json_path(parts):
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def short(text, n=200):
    text = text if isinstance(text, str) else json.dumps(text)
    return text if len(text) <= n else text[:n] + "…"


# ----------------------------------------------------------------------------------------------
# The document


class Document:
    """infra/openapi.yaml: its operations and schemas, with validators whose `$ref`s resolve
    into the whole document."""

    BASE_URI = "urn:autodeploy:openapi"

    def __init__(self, path):
        self.path = path
        self.spec = yaml.safe_load(path.read_text())
        self.registry = Registry().with_resource(self.BASE_URI, DRAFT202012.create_resource(self.spec))
        templates = []
        for template in self.spec["paths"]:
            parts = re.split(r"(\{[^}]+\})", template)
            pattern = re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            templates.append((literal, template, pattern))
        # The most literal template first: `deployments/lease` before `deployments/{id}`.
        templates.sort(key=lambda t: -t[0])
        self.templates = [(template, pattern) for _, template, pattern in templates]
        self.validators = {}

    def template(self, path):
        return next((template for template, pattern in self.templates if pattern.match(path)), None)

    def operation_ids(self):
        return {op["operationId"] for item in self.spec["paths"].values()
                for method, op in item.items() if method in METHODS}

    def deref(self, node):
        """`node`, its local `$ref`s followed."""
        for _ in range(20):
            if not (isinstance(node, dict) and "$ref" in node):
                break
            target = self.spec
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def validator(self, schema):
        key = id(schema)
        if key not in self.validators:
            wrapper = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                       "$id": self.BASE_URI + "/check", "allOf": [self._absolute_refs(schema)]}
            self.validators[key] = (schema, Draft202012Validator(
                wrapper, registry=self.registry, format_checker=FORMATS))
        return self.validators[key][1]

    def _absolute_refs(self, node):
        if isinstance(node, dict):
            return {k: (self.BASE_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#/")
                        else self._absolute_refs(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [self._absolute_refs(v) for v in node]
        return node

    def errors(self, instance, schema):
        """`where: message` of each way `instance` fails `schema`."""
        out = []
        for err in sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path)):
            message = err.message
            if err.context:  # oneOf / anyOf: the branches' own errors say more
                subs = sorted({f"{json_path(e.absolute_path)}: {e.message}" for e in err.context})
                message += " | " + "; ".join(short(s, 160) for s in subs[:4])
            out.append(f"{json_path(err.absolute_path)}: {short(message, 600)}")
        return out

    def is_valid(self, instance, schema):
        return self.validator(schema).is_valid(instance)

    def _declared(self, instance, schema, depth=0):
        """The properties an object schema declares (name -> subschemas), following `$ref`,
        `allOf` and the `oneOf` / `anyOf` branches `instance` satisfies; and whether it is closed."""
        schema = self.deref(schema)
        props, closed = {}, False
        if not isinstance(schema, dict) or depth > 30:
            return props, closed
        for name, sub in (schema.get("properties") or {}).items():
            props.setdefault(name, []).append(sub)
        closed = schema.get("additionalProperties") is False
        for part in schema.get("allOf", []):
            p, c = self._declared(instance, part, depth + 1)
            for k, v in p.items():
                props.setdefault(k, []).extend(v)
            closed = closed or c
        for key in ("oneOf", "anyOf"):
            branches = schema.get(key, [])
            for part in [b for b in branches if self.is_valid(instance, b)] or branches:
                p, _ = self._declared(instance, part, depth + 1)
                for k, v in p.items():
                    props.setdefault(k, []).extend(v)
        return props, closed

    def _item_schemas(self, schema, depth=0):
        schema = self.deref(schema)
        if not isinstance(schema, dict) or depth > 20:
            return []
        out = [schema["items"]] if "items" in schema else []
        for key in ("allOf", "oneOf", "anyOf"):
            for part in schema.get(key, []):
                out += self._item_schemas(part, depth + 1)
        return out

    def undeclared(self, instance, schema, where="$"):
        """Properties of `instance` no applicable schema declares, where the schema is open
        (a closed one's are the validator's errors already)."""
        found = []
        if isinstance(instance, dict):
            props, closed = self._declared(instance, schema)
            for k, v in instance.items():
                if k not in props:
                    if not closed:
                        found.append(f"{where}.{k}")
                    continue
                for sub in props[k]:
                    found += [f for f in self.undeclared(v, sub, f"{where}.{k}") if f not in found]
        elif isinstance(instance, list):
            for i, v in enumerate(instance):
                for sub in self._item_schemas(schema):
                    found += [f for f in self.undeclared(v, sub, f"{where}[{i}]") if f not in found]
        return found

    def example_errors(self):
        """(where, error) for each example of the document that fails its own schema."""
        out = []

        def walk(node, where):
            if isinstance(node, dict):
                # Media types and schemas with examples; parameters (`in`) are not walked here.
                if "schema" in node and ("example" in node or "examples" in node) and "in" not in node:
                    examples = [node["example"]] if "example" in node else [
                        self.deref(e).get("value") for e in node["examples"].values()]
                    for example in examples:
                        out.extend((where, e) for e in self.errors(example, node["schema"]))
                for k, v in node.items():
                    walk(v, f"{where}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}/{i}")

        walk(self.spec["paths"], "#/paths")
        walk(self.spec["components"].get("responses", {}), "#/components/responses")
        walk(self.spec["components"].get("requestBodies", {}), "#/components/requestBodies")
        for name, schema in self.spec["components"]["schemas"].items():
            if "example" in schema:
                out.extend((f"#/components/schemas/{name}/example", e)
                           for e in self.errors(schema["example"], schema))
        return out


# ----------------------------------------------------------------------------------------------
# The checks of one answer


class Conformance:
    """Checks answers against the document and keeps every mismatch."""

    def __init__(self, doc):
        self.doc = doc
        self.failures = []
        self.operations_seen = set()
        self.requests = 0
        self.statuses = Counter()

    def fail(self, call, what, detail=""):
        self.failures.append((call, what, detail))

    def summary(self):
        lines = []
        for call, what, detail in self.failures:
            where = f"[{call['label']}] {call['method']} {call['path']} -> {call['status']}"
            if call.get("operation"):
                where += f" ({call['operation']})"
            lines.append(f"- {where}: {what}" + (f": {short(detail, 400)}" if detail else ""))
        return lines

    def answer(self, call, method, path, resp):
        """The whole answer `resp` to `method path` against the document."""
        status = resp.status_code
        self.statuses[status] += 1
        template = self.doc.template(path)
        if template is None:
            # A path no route serves: 404 in the error shape.
            self.error_shape(call, resp)
            return
        item = self.doc.spec["paths"][template]
        op = item.get(method.lower())
        if op is None:
            self.undocumented_method(call, method, item, resp)
            return
        call["operation"] = op["operationId"]
        self.operations_seen.add(op["operationId"])
        responses = op.get("responses", {})
        documented = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if documented is None and status in ANY_ROUTE:
            documented = self.doc.spec["components"]["responses"][ANY_ROUTE[status]]
        if documented is None:
            self.fail(call, f"status {status} is not documented",
                      f"documented: {', '.join(sorted(responses))}; body: {short(resp.text)}")
            if status >= 400:
                self.error_shape(call, resp)
            return
        documented = self.doc.deref(documented)
        self.headers(call, resp, documented.get("headers") or {})
        content = documented.get("content")
        ctype = resp.headers.get("content-type")
        media = ctype.split(";")[0].strip().lower() if ctype else None
        if not content:
            if resp.content:
                self.fail(call, "a body where the document says none", f"{ctype}: {short(resp.text)}")
            return
        media_types = {m.lower(): m for m in content}
        if media not in media_types:
            self.fail(call, "Content-Type not documented", f"{ctype!r}; documented: {sorted(content)}")
            return
        schema = self.doc.deref(content[media_types[media]]).get("schema")
        if schema is None:
            return
        if media.endswith("json"):
            try:
                body = resp.json()
            except ValueError:
                self.fail(call, "the body is not JSON", short(resp.text))
                return
        else:
            body = resp.text
        self.body(call, body, schema)
        self.error_code(call, status, body)

    def headers(self, call, resp, documented):
        present = {k.lower() for k in resp.headers}
        for name, spec in documented.items():
            spec = self.doc.deref(spec)
            if name.lower() not in present:
                if spec.get("required"):
                    self.fail(call, f"required header {name} is absent")
                continue
            value = resp.headers[name]
            schema = spec.get("schema")
            if schema and not self.doc.is_valid(header_instance(value, self.doc.deref(schema)), schema):
                self.fail(call, f"header {name} does not match its schema", value)
            if name.lower() == "etag" and not re.match(r'^(W/)?"[^"]*"$', value):
                self.fail(call, "ETag is not a quoted entity tag", value)
        named = {h.lower() for h in documented}
        for h in NOTABLE_HEADERS:
            if h in present and h not in named:
                self.fail(call, f"header {h} is sent but not documented", resp.headers[h])

    def body(self, call, body, schema):
        for error in self.doc.errors(body, schema):
            self.fail(call, "the body does not validate", error)
        for where in self.doc.undeclared(body, schema):
            self.fail(call, "a property the schema does not declare", where)

    def error_code(self, call, status, body):
        if status >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            if status in CODES and code not in CODES[status]:
                self.fail(call, "the error code does not fit the status", f"{status} with {code!r}")

    def error_shape(self, call, resp):
        """An answer outside the operations (unknown path or method): the document's error shape."""
        if resp.status_code < 400:
            self.fail(call, "an answer other than an error outside the document's operations")
            return
        media = (resp.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            self.fail(call, "the error is not application/json", f"{media!r}: {short(resp.text)}")
            return
        try:
            body = resp.json()
        except ValueError:
            self.fail(call, "the error is not JSON", short(resp.text))
            return
        self.body(call, body, {"$ref": "#/components/schemas/Error"})
        self.error_code(call, resp.status_code, body)

    def undocumented_method(self, call, method, item, resp):
        """A method the path does not document: 405 METHOD_NOT_ALLOWED, `Allow` listing the
        documented ones (and HEAD with GET)."""
        if resp.status_code != 405:
            self.fail(call, "a method the path does not document is not answered 405")
        else:
            documented = {m.upper() for m in item if m in METHODS}
            if "GET" in documented:
                documented.add("HEAD")
            allow = resp.headers.get("allow")
            listed = {m.strip().upper() for m in (allow or "").split(",") if m.strip()}
            if allow is None:
                self.fail(call, "405 without an Allow header")
            elif listed != documented:
                self.fail(call, "Allow differs from the path's documented methods",
                          f"Allow: {allow}; documented: {', '.join(sorted(documented))}")
        self.error_shape(call, resp)

    def accepted_request(self, call, method, path, headers, data, resp):
        """A JSON body the server accepted (2xx) satisfies the documented request schema."""
        template = self.doc.template(path)
        op = self.doc.spec["paths"][template].get(method.lower()) if template else None
        if not op or not data or not 200 <= resp.status_code < 300:
            return
        content = self.doc.deref(op.get("requestBody") or {}).get("content") or {}
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        media = ctype.split(";")[0].strip().lower()
        if media not in content:
            # GitHub may send its push form-encoded; the document describes the JSON body.
            if content and not path.endswith("/webhooks/github"):
                self.fail(call, "a request accepted with a media type the document does not list",
                          f"{media!r}; documented: {sorted(content)}")
            return
        schema = self.doc.deref(content[media]).get("schema")
        if not schema or not media.endswith("json"):
            return
        try:
            body = json.loads(data)
        except ValueError:
            return
        for error in self.doc.errors(body, schema):
            self.fail(call, "a request accepted but invalid under the documented request schema", error)


def header_instance(value, schema):
    """A header's text as the JSON value its schema describes (`Retry-After: 5` is 5)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "integer" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value


# ----------------------------------------------------------------------------------------------
# Servers


def http(method, url, **kw):
    """One request on its own connection, whatever proxy the environment names."""
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`autodeploy serve` on a free port of 127.0.0.1 with the admin token, no dispatcher and
    nothing else of the caller's AUTODEPLOY_* variables; stopped by its own pid."""

    def __init__(self, binary, database, log, extra_args=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEPLOY_")}
        env.update(AUTODEPLOY_ADMIN_TOKEN=ADMIN, RUST_LOG="warn")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}", "--database", str(database),
                 "--targets-allow-private", "--no-dispatch", *extra_args],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}) on start:\n{self.log_tail()}")
            try:
                if http("GET", self.base + "/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer /health within 60 s:\n{self.log_tail()}")

    def log_tail(self):
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-20:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


# ----------------------------------------------------------------------------------------------
# Requests


class RawAnswer:
    """An answer read from a socket, with what the checks read of a `requests.Response`."""

    def __init__(self, status, headers, content):
        self.status_code, self.headers, self.content = status, CaseInsensitiveDict(headers), content
        self.text = content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def read_answer(sock):
    """The HTTP/1.1 answer on `sock` (the server closes the connection after it), or None."""
    raw = b""
    sock.settimeout(60)
    while True:
        head_end = raw.find(b"\r\n\r\n")
        if head_end >= 0:
            lines = raw[:head_end].decode("latin-1").split("\r\n")
            headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            headers = {k.strip(): v.strip() for k, v in headers.items()}
            length = int(CaseInsensitiveDict(headers).get("content-length", "0"))
            if len(raw) >= head_end + 4 + length:
                return RawAnswer(int(lines[0].split()[1]), headers, raw[head_end + 4:head_end + 4 + length])
        try:
            chunk = sock.recv(64 * KIB)
        except (ConnectionResetError, socket.timeout):
            return None
        if not chunk:
            return None
        raw += chunk


class Client:
    """Requests to one server, each answer checked."""

    def __init__(self, run, base, tokens=None):
        self.run, self.base = run, base
        self.tokens = tokens if tokens is not None else {}
        self.deliveries = 0

    def delivery_id(self):
        self.deliveries += 1
        return str(uuid.UUID(int=self.deliveries))

    def call(self, label, method, path, *, token=ADMIN, scheme="Bearer", json_body=None, data=None,
             headers=None, params=None, expect=None):
        """`method path` with an `Authorization` of `token` (none when None); `expect` is the
        status (or tuple of statuses) the scenario means to reach."""
        h = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        query = ""
        if params:
            query = "?" + "&".join(f"{k}={v}" for k, v in params.items())
        call = {"label": label, "method": method, "path": path + query, "status": None}
        self.run.requests += 1
        try:
            resp = http(method, self.base + path, data=data, headers=h, params=params, timeout=60)
        except requests.RequestException as e:
            call["status"] = "no answer"
            self.run.fail(call, "the request failed", repr(e))
            return None
        call["status"] = resp.status_code
        self.expect(call, resp, expect)
        route = path.split("?", 1)[0]
        self.run.accepted_request(call, method, route, h, data, resp)
        self.run.answer(call, method, route, resp)
        return resp

    def expect(self, call, resp, expect):
        wanted = expect if isinstance(expect, tuple) else (expect,)
        if expect is not None and resp.status_code not in wanted:
            self.run.fail(call, f"the scenario expects {' or '.join(map(str, wanted))}", short(resp.text))

    def json_of(self, resp, status=200):
        """The JSON answer of `resp` when it has `status` (else None: the failure is recorded)."""
        if resp is None or resp.status_code != status:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def webhook(self, label, provider, body, *, event="push", sign=True, secret=None, delivery=None,
                params=None, expect=None, extra_headers=None, org=ORG):
        h = push_headers(provider, body, event, delivery or self.delivery_id(), secret, sign)
        h.update(extra_headers or {})
        return self.call(label, "POST", f"/organization/{org}/webhooks/{provider}", token=None,
                         data=body, headers=h, params=params, expect=expect)

    def service(self, service_id, body, label=None, **kw):
        return self.call(label or f"PUT service {service_id}", "PUT", f"{O}/services/{service_id}",
                         json_body=body, **kw)

    def busy(self, label, method, path, headers, declared, sent, count):
        """503 from the body buffer: `count` requests to `method path`, each declaring
        `declared` bytes and sending `sent` of them, never the rest. Held open by this script,
        they cannot all fit the budget whatever order the server reads them in, so at least
        one is refused 503; every answer that arrives must be that 503. Whether one came."""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        port = int(self.base.rsplit(":", 1)[1])
        pending = {}
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            pending[sock] = head.encode() + b"x" * sent
        conns = list(pending)
        answered = []
        # A safety net for a server that never refuses: a healthy one answers at once.
        deadline = time.monotonic() + 60
        try:
            while not answered and time.monotonic() < deadline:
                writers = [s for s, rest in pending.items() if rest]
                readable, writable, _ = select.select(conns, writers, [], 1)
                for sock in writable:
                    try:
                        n = sock.send(pending[sock][:256 * KIB])
                        pending[sock] = pending[sock][n:]
                    except OSError:  # refused and closed: its answer is waiting to be read
                        pending[sock] = b""
                answered = readable
            call = {"label": label, "method": method, "path": path, "status": None}
            if not answered:
                call["status"] = "no answer"
                self.run.fail(call, "no request was refused while the body buffer was full")
                return False
            for sock in answered:
                sock.setblocking(True)
                self.run.requests += 1
                resp = read_answer(sock)
                call = dict(call)
                if resp is None:
                    call["status"] = "closed"
                    self.run.fail(call, "the connection closed without an answer")
                    continue
                call["status"] = resp.status_code
                self.expect(call, resp, 503)
                self.run.answer(call, method, path, resp)
            return True
        finally:
            for sock in conns:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


# ----------------------------------------------------------------------------------------------
# Webhook signing, as each provider signs


SECRETS = {p: f"{p}-secret-0123456789abcdef".replace("-", "_") for p in
           ["github", "gitlab", "bitbucket", "bitbucket-server", "gitea", "gogs", "azure-devops"]}
SECRETS["dockerhub"] = "dockerhubSecret0123456789"

# Each provider's push fixture and its event header's value.
PUSH_FIXTURES = {
    "github": ("github/gp-push.json", "push"),
    "gitlab": ("gitlab/gp-push-event.json", "Push Hook"),
    "bitbucket": ("bitbucket-cloud/gp-repo-push.json", "repo:push"),
    "bitbucket-server": ("bitbucket-server/gp-repo-refs-changed.json", "repo:refs_changed"),
    "gitea": ("gitea/gp-push-event.json", "push"),
    "gogs": ("gogs/gp-push-event.json", "push"),
    "azure-devops": ("azure-devops/gp-git.push.json", "push"),
}
PROVIDER_ENUM = {"github": "GITHUB", "gitlab": "GITLAB", "bitbucket": "BITBUCKET",
                 "bitbucket-server": "BITBUCKET_SERVER", "gitea": "GITEA", "gogs": "GOGS",
                 "azure-devops": "AZURE_DEVOPS"}


def push_body(fixtures, provider):
    """The push fixture of `provider`. Bitbucket Server's published one deletes a branch: the
    same change as an update (a new commit on it), which deploys."""
    body = (fixtures / PUSH_FIXTURES[provider][0]).read_bytes()
    if provider == "bitbucket-server":
        push = json.loads(body)
        push["changes"][0] |= {"type": "UPDATE", "toHash": "9049f1265b7d61be4a8904a9a27120d2064dab3b"}
        body = json.dumps(push).encode()
    return body


def newer_commit(body, commit):
    """A GitHub push `body` moved on by one more commit, `commit`."""
    push = json.loads(body)
    head = push["head_commit"] | {"id": commit}
    return json.dumps(push | {"before": push["after"], "after": commit, "head_commit": head,
                              "commits": [head]}).encode()


def tagged_package(body, tag):
    """A GitHub Packages delivery `body` (the published ones are untagged, a digest only) with
    its version tagged `tag`."""
    event = json.loads(body)
    version = event["package" if "package" in event else "registry_package"]["package_version"]
    version["container_metadata"]["tag"]["name"] = tag
    version["package_url"] = version["package_url"].rsplit(":", 1)[0] + f":{tag}"
    return json.dumps(event).encode()


def hmac_hex(secret, body):
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_headers(provider, body, event, delivery, secret=None, sign=True):
    secret = secret or SECRETS[provider]
    h = {"Content-Type": "application/json"}
    if provider == "github":
        h.update({"X-GitHub-Event": event, "X-GitHub-Delivery": delivery})
        if sign:
            h["X-Hub-Signature-256"] = "sha256=" + hmac_hex(secret, body)
    elif provider == "gitlab":
        h.update({"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": delivery})
        if sign:
            h["X-Gitlab-Token"] = secret
    elif provider in ("bitbucket", "bitbucket-server"):
        id_header = "X-Request-UUID" if provider == "bitbucket" else "X-Request-Id"
        h.update({"X-Event-Key": event, id_header: delivery})
        if sign:
            h["X-Hub-Signature"] = "sha256=" + hmac_hex(secret, body)
    elif provider in ("gitea", "gogs"):
        name = provider.capitalize()
        h.update({f"X-{name}-Event": event, f"X-{name}-Delivery": delivery})
        if sign:
            h[f"X-{name}-Signature"] = hmac_hex(secret, body)
    elif provider == "azure-devops":
        # Azure DevOps: basic authentication; its delivery id is the body's `id`.
        if sign:
            h["Authorization"] = "Basic " + base64.b64encode(f"azure:{secret}".encode()).decode()
    return h


# ----------------------------------------------------------------------------------------------
# The main scenario: every operation, its success and error cases


def routing_and_auth(c, doc):
    c.call("health", "GET", "/health", token=None, expect=200)
    r = c.call("the document", "GET", "/openapi.yaml", token=None, expect=200)
    if r is not None and r.status_code == 200 and r.content != doc.path.read_bytes():
        c.run.fail({"label": "the document", "method": "GET", "path": "/openapi.yaml", "status": 200},
                   f"GET /openapi.yaml is not {doc.path.name} byte for byte",
                   f"{len(r.content)} bytes served, {len(doc.path.read_bytes())} in the file")
    c.call("unknown path", "GET", "/nope", token=None, expect=404)
    c.call("405 on /health", "DELETE", "/health", token=None, expect=405)
    c.call("405 on /openapi.yaml", "POST", "/openapi.yaml", token=None, expect=405)
    c.call("405 on the services collection", "POST", f"{O}/services", json_body={}, expect=405)
    c.call("405 on a token", "GET", f"{O}/tokens/abc", expect=405)
    c.call("405 on a git webhook", "GET", f"{O}/webhooks/github", token=None, expect=405)
    c.call("405 on container/deploy", "GET", f"{O}/container/deploy", expect=405)
    c.call("GET deployments/lease", "GET", f"{O}/deployments/lease", expect=(405, 404))

    c.call("no token", "GET", f"{O}/services", token=None, expect=401)
    c.call("unknown token", "GET", f"{O}/services", token="adt_" + "0" * 64, expect=401)
    c.call("Token scheme", "GET", f"{O}/services", scheme="Token", expect=200)
    c.call("overlong token", "GET", f"{O}/services", token="x" * 600, expect=401)


def tokens(c):
    for name, scopes in [("deploy", ["deploy"]), ("manage", ["manage"]), ("consume", ["consume"]),
                         ("default", None)]:
        body = {"name": f"{name}-token"} | ({"scopes": scopes} if scopes else {})
        created = c.json_of(c.call(f"create a {name} token", "POST", f"{O}/tokens", json_body=body, expect=201), 201)
        c.tokens[name] = created["token"] if created else "missing-token"
    created = c.json_of(c.call("create a token of another organization", "POST", f"/organization/{OTHER}/tokens",
                               json_body={"name": "x", "scopes": ["manage", "deploy", "consume"]}, expect=201), 201)
    c.tokens["other"] = created["token"] if created else "missing-token"
    T = c.tokens
    c.call("list tokens", "GET", f"{O}/tokens", expect=200)
    c.call("list tokens, limit=1", "GET", f"{O}/tokens", params={"limit": "1"}, expect=200)
    c.call("list tokens, limit=0", "GET", f"{O}/tokens", params={"limit": "0"}, expect=400)
    c.call("list tokens, bad cursor", "GET", f"{O}/tokens", params={"cursor": "garbage"}, expect=400)
    c.call("list tokens, manage token", "GET", f"{O}/tokens", token=T["manage"], expect=403)
    c.call("create a token, manage token", "POST", f"{O}/tokens", token=T["manage"], json_body={"name": "x"},
           expect=403)
    c.call("create a token, unknown scope", "POST", f"{O}/tokens", json_body={"name": "x", "scopes": ["root"]},
           expect=400)
    c.call("create a token, not JSON", "POST", f"{O}/tokens", data=b"{nope",
           headers={"Content-Type": "application/json"}, expect=400)
    c.call("create a token, text/plain", "POST", f"{O}/tokens", data=b'{"name":"x"}',
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("create a token, 300 KiB", "POST", f"{O}/tokens", data=b'{"name":"' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    created = c.json_of(c.call("create a throwaway token", "POST", f"{O}/tokens", json_body={"name": "tmp"},
                               expect=201), 201)
    token_id = created["id"] if created else "0" * 16
    c.call("delete a token", "DELETE", f"{O}/tokens/{token_id}", expect=204)
    c.call("delete a token again", "DELETE", f"{O}/tokens/{token_id}", expect=404)
    c.call("delete a token, bad id", "DELETE", f"{O}/tokens/bad!id", expect=400)
    c.call("delete a token, manage token", "DELETE", f"{O}/tokens/{token_id}", token=T["manage"], expect=403)


def webhook_secrets(c):
    T = c.tokens
    S = f"{O}/webhook-secrets"
    c.call("GET an unset secret", "GET", f"{S}/github", expect=200)
    c.call("a webhook before its secret", "POST", f"{O}/webhooks/github", token=None, data=b"{}",
           headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}, expect=401)
    for provider, secret in SECRETS.items():
        c.call(f"PUT the {provider} secret", "PUT", f"{S}/{provider}", json_body={"secret": secret}, expect=204)
    c.call("GET the github secret", "GET", f"{S}/github", expect=200)
    c.call("GET the dockerhub secret, manage token", "GET", f"{S}/dockerhub", token=T["manage"], expect=200)
    c.call("GET a secret, unknown provider", "GET", f"{S}/svn", expect=400)
    c.call("GET a secret, another organization's token", "GET", f"{S}/github", token=T["other"], expect=403)
    c.call("GET a secret, deploy token", "GET", f"{S}/github", token=T["deploy"], expect=403)
    c.call("PUT a secret too short", "PUT", f"{S}/gitlab", json_body={"secret": "short"}, expect=400)
    c.call("PUT a secret, unknown field", "PUT", f"{S}/gitlab", json_body={"secret": "0123456789abcdef0", "x": 1},
           expect=400)
    c.call("PUT a secret, text/plain", "PUT", f"{S}/gitlab", data=b'{"secret":"0123456789abcdef0"}',
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("PUT a secret, 300 KiB", "PUT", f"{S}/gitlab", data=b'{"secret":"' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("PUT a secret, no token", "PUT", f"{S}/gitlab", token=None, json_body={"secret": "0123456789abcdef0"},
           expect=401)
    c.call("PUT a secret, unknown provider", "PUT", f"{S}/svn", json_body={"secret": "0123456789abcdef0"},
           expect=400)
    other = f"/organization/{OTHER}/webhook-secrets/gogs"
    c.call("PUT a secret to delete", "PUT", other, json_body={"secret": "0123456789abcdef0"}, expect=204)
    c.call("DELETE a secret", "DELETE", other, expect=204)
    c.call("DELETE an unset secret", "DELETE", other, expect=404)
    c.call("DELETE a secret, unknown provider", "DELETE", f"{S}/svn", expect=400)
    c.call("DELETE a secret, another organization's token", "DELETE", f"{S}/gogs", token=T["other"], expect=403)
    c.call("DELETE a secret, no token", "DELETE", f"{S}/gogs", token=None, expect=401)


def targets(c):
    T = c.tokens
    D = f"{O}/targets"
    webhook = {"type": "WEBHOOK", "url": "http://127.0.0.1:9/hook"}
    c.call("PUT a WEBHOOK target (secret generated)", "PUT", f"{D}/hook", json_body=webhook, expect=201)
    c.call("PUT a WEBHOOK target again", "PUT", f"{D}/hook", json_body=webhook, expect=200)
    c.call("PUT a WEBHOOK target at a new url, secret kept", "PUT", f"{D}/hook",
           json_body={"type": "WEBHOOK", "url": "http://127.0.0.1:9/h2"}, expect=200)
    c.call("PUT a WEBHOOK target with its secret", "PUT", f"{D}/hook2",
           json_body=webhook | {"secret": "whsec_" + base64.b64encode(b"k" * 32).decode()}, expect=201)
    c.call("PUT a QOVERY target", "PUT", f"{D}/qovery",
           json_body={"type": "QOVERY", "token": "qov_token_123", "api_url": "http://127.0.0.1:9"}, expect=201)
    c.call("PUT a QOVERY target at a new api_url, token not given", "PUT", f"{D}/qovery",
           json_body={"type": "QOVERY", "api_url": "http://127.0.0.1:9/v2"}, expect=400)
    c.call("PUT a GITHUB_ACTIONS target", "PUT", f"{D}/gha",
           json_body={"type": "GITHUB_ACTIONS", "token": "ghp_abc", "repository": "acme/deploy",
                      "workflow": "deploy.yml", "ref": "main", "api_url": "http://127.0.0.1:9/api/v3/"}, expect=201)
    r = c.call("GET a target", "GET", f"{D}/hook", expect=200)
    etag = r.headers.get("ETag", '"none"') if r is not None else '"none"'
    shown = c.json_of(r)
    if shown is not None:
        # The target as read, changed: a new version, so `etag` is stale afterwards.
        c.call("PUT a target as read and changed, If-Match", "PUT", f"{D}/hook",
               json_body=shown | {"url": "http://127.0.0.1:9/h3",
                                  "secret": "whsec_" + base64.b64encode(b"h" * 32).decode()},
               headers={"If-Match": etag}, expect=200)
    c.call("PUT a target, stale If-Match", "PUT", f"{D}/hook", json_body=webhook, headers={"If-Match": etag},
           expect=412)
    c.call("PUT an existing target, If-None-Match", "PUT", f"{D}/gha",
           json_body={"type": "GITHUB_ACTIONS", "repository": "acme/deploy", "workflow": "deploy.yml", "ref": "main"},
           headers={"If-None-Match": "*"}, expect=412)
    c.call("GET a QOVERY target", "GET", f"{D}/qovery", expect=200)
    c.call("GET a GITHUB_ACTIONS target", "GET", f"{D}/gha", expect=200)
    c.call("GET an unknown target", "GET", f"{D}/nope", expect=404)
    c.call("GET a target, bad id", "GET", f"{D}/bad!id", expect=400)
    c.call("list targets", "GET", D, expect=200)
    c.call("list targets, no token", "GET", D, token=None, expect=401)
    c.call("list targets, deploy token", "GET", D, token=T["deploy"], expect=403)
    c.call("list targets, limit=x", "GET", D, params={"limit": "x"}, expect=400)
    c.call("PUT a target, unknown type", "PUT", f"{D}/bad", json_body={"type": "FTP"}, expect=400)
    c.call("PUT a target, unknown field", "PUT", f"{D}/bad",
           json_body={"type": "WEBHOOK", "url": "https://example.com/x", "extra": 1}, expect=400)
    c.call("PUT a QOVERY target without its token", "PUT", f"{D}/bad2", json_body={"type": "QOVERY"}, expect=400)
    c.call("PUT a target, text/plain", "PUT", f"{D}/bad", data=b'{"type":"WEBHOOK","url":"https://example.com/x"}',
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("PUT a target, 300 KiB", "PUT", f"{D}/bad",
           data=b'{"type":"WEBHOOK","url":"https://example.com/' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("PUT a target, deploy token", "PUT", f"{D}/bad", token=T["deploy"],
           json_body={"type": "WEBHOOK", "url": "https://example.com/x"}, expect=403)
    c.call("DELETE an unknown target", "DELETE", f"{D}/nope", expect=404)
    c.call("DELETE a target, no token", "DELETE", f"{D}/hook2", token=None, expect=401)
    c.call("DELETE a target", "DELETE", f"{D}/hook2", expect=204)


APP = {"environment_id": "production", "name": "API", "kind": "APPLICATION", "auto_deploy": True,
       "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop.git", "branch": "main"},
       "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "services/api/"}]}


def services(c):
    T = c.tokens
    S = f"{O}/services"
    merge = {"Content-Type": "application/merge-patch+json"}
    c.service("api", APP, expect=201)
    c.service("api", APP, label="PUT a service again", expect=200)
    r = c.call("GET a service", "GET", f"{S}/api", expect=200)
    etag = r.headers.get("ETag", '"none"') if r is not None else '"none"'
    c.service("api", APP, label="PUT an existing service, If-None-Match", headers={"If-None-Match": "*"}, expect=412)
    c.call("PATCH a service, If-Match", "PATCH", f"{S}/api", data=b'{"auto_deploy": true, "name": "API v2"}',
           headers=merge | {"If-Match": etag}, expect=200)
    c.call("PATCH a service, stale If-Match", "PATCH", f"{S}/api", data=b'{"auto_deploy": false}',
           headers=merge | {"If-Match": etag}, expect=412)
    c.call("PATCH a service as application/json", "PATCH", f"{S}/api", json_body={"deployment_restrictions": None},
           expect=200)
    c.call("PATCH an unknown service", "PATCH", f"{S}/nope", json_body={"auto_deploy": True}, expect=404)
    c.call("PATCH a service into an invalid one", "PATCH", f"{S}/api",
           json_body={"git_repository": {"branch": "bad..branch"}}, expect=400)
    c.call("PATCH a service, text/plain", "PATCH", f"{S}/api", data=b'{"auto_deploy": true}',
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("PATCH a service, 300 KiB", "PATCH", f"{S}/api", data=b'{"name":"' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("PATCH a service, unquoted If-Match", "PATCH", f"{S}/api", json_body={"auto_deploy": True},
           headers={"If-Match": "unquoted"}, expect=400)
    c.call("PATCH an unknown service, If-Match", "PATCH", f"{S}/nope", json_body={"auto_deploy": True},
           headers={"If-Match": "*"}, expect=412)
    c.call("PATCH a service, another organization's token", "PATCH", f"{S}/api", json_body={"auto_deploy": True},
           token=T["other"], expect=403)
    c.call("PATCH a service, no token", "PATCH", f"{S}/api", json_body={"auto_deploy": True}, token=None, expect=401)
    c.service("bad", {"environment_id": "production", "kind": "APPLICATION",
                      "git_repository": {"provider": "GITHUB", "url": "https://u:p@github.com/a/b", "branch": "main",
                                         "extra": 1}}, label="PUT an invalid service", expect=400)
    c.call("PUT a service, text/plain", "PUT", f"{S}/bad", data=b"{}", headers={"Content-Type": "text/plain"},
           expect=415)
    c.call("PUT a service, no Content-Type", "PUT", f"{S}/bad", data=b'{"kind":"JOB"}', expect=415)
    c.call("PUT a service, 300 KiB", "PUT", f"{S}/bad", data=b'{"name":"' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("PUT a service, deploy token", "PUT", f"{S}/bad", json_body=APP, token=T["deploy"], expect=403)
    c.call("PUT a service, no token", "PUT", f"{S}/bad", json_body=APP, token=None, expect=401)
    c.service("bad", APP | {"deploy_target": {"target_id": "missing"}}, label="PUT a service, unknown target",
              expect=400)
    c.call("PUT a service, bad organization id", "PUT", "/organization/bad!org/services/api", json_body=APP,
           expect=400)
    c.service("web", APP | {"deploy_target": {"target_id": "hook", "external_id": None}},
              label="PUT a service with a WEBHOOK target", expect=201)
    c.service("container", {"environment_id": "production", "kind": "CONTAINER", "auto_deploy": True,
                            "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": "1.0.0"},
                            "tag_policy": {"type": "SEMVER", "range": ">=1.0.0 <2"},
                            "deploy_target": {"target_id": "qovery", "external_id": "9f1e2d3c-4b5a-4c6d-8e7f-0a1b2c3d4e5f"}},
              label="PUT a CONTAINER with a QOVERY target", expect=201)
    c.service("container-glob", {"environment_id": "production", "kind": "CONTAINER", "auto_deploy": True,
                                 "image": {"image_name": "acme/api", "tag": "release-1"},
                                 "tag_policy": {"type": "GLOB", "pattern": "release-*"}},
              label="PUT a CONTAINER with a GLOB policy", expect=201)
    c.service("job", {"environment_id": "production", "kind": "JOB", "auto_deploy": True,
                      "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": "1.0.0"},
                      "tag_policy": {"type": "REGEX", "pattern": "^1\\.[0-9]+\\.[0-9]+$"},
                      "deploy_target": {"target_id": "gha", "external_id": None}},
              label="PUT a JOB with a GITHUB_ACTIONS target", expect=201)
    c.call("GET a CONTAINER", "GET", f"{S}/container", expect=200)
    c.call("GET a JOB", "GET", f"{S}/job", expect=200)
    c.call("GET an unknown service", "GET", f"{S}/nope", expect=404)
    c.call("GET a service, bad id", "GET", f"{S}/bad!id", expect=400)
    c.call("GET a service, another organization's token", "GET", f"{S}/api", token=T["other"], expect=403)
    c.call("list services", "GET", S, expect=200)
    page = c.json_of(c.call("list services, limit=2", "GET", S, params={"limit": "2"}, expect=200))
    if page is not None and page.get("next_cursor"):
        c.call("list services, page 2", "GET", S, params={"limit": "2", "cursor": page["next_cursor"]}, expect=200)
        c.call("list services, another organization's cursor", "GET", f"/organization/{OTHER}/services",
               params={"cursor": page["next_cursor"]}, expect=400)
    elif page is not None:
        c.run.fail({"label": "list services, limit=2", "method": "GET", "path": S, "status": 200},
                   "the scenario expects a second page", short(page))
    c.call("list services, limit given twice", "GET", f"{S}?limit=1&limit=2", expect=400)
    c.call("list services, deploy token", "GET", S, token=T["deploy"], expect=403)
    c.call("DELETE a target in use", "DELETE", f"{O}/targets/qovery", expect=409)
    c.service("to-delete", APP, label="PUT a service to delete", expect=201)
    c.call("DELETE a service, If-None-Match", "DELETE", f"{S}/to-delete", headers={"If-None-Match": "*"}, expect=412)
    c.call("DELETE a service, both conditions", "DELETE", f"{S}/to-delete",
           headers={"If-None-Match": "*", "If-Match": "*"}, expect=400)
    c.call("DELETE a service", "DELETE", f"{S}/to-delete", expect=204)
    c.call("DELETE an unknown service", "DELETE", f"{S}/to-delete", expect=404)
    c.call("DELETE an unknown service, If-Match", "DELETE", f"{S}/to-delete", headers={"If-Match": "*"}, expect=412)
    c.call("DELETE a service, no token", "DELETE", f"{S}/api", token=None, expect=401)
    c.call("DELETE a service, deploy token", "DELETE", f"{S}/api", token=T["deploy"], expect=403)


def git_webhooks(c, fixtures):
    for provider, (_, event) in PUSH_FIXTURES.items():
        body = push_body(fixtures, provider)
        info = c.json_of(c.webhook(f"{provider} push, no service follows", provider, body, event=event, expect=200))
        if not info or not info.get("repository"):
            c.run.fail({"label": f"{provider} push", "method": "POST", "path": f"{O}/webhooks/{provider}",
                        "status": 200}, "the scenario expects the push's repository in the answer", short(info or ""))
            continue
        c.service(f"git-{provider}", {"environment_id": "production", "kind": "APPLICATION", "auto_deploy": True,
                                      "git_repository": {"provider": PROVIDER_ENUM[provider],
                                                         "url": f"https://{info['repository']}",
                                                         "branch": info["branch"]}},
                  label=f"PUT a service following {provider}", expect=201)
        c.webhook(f"{provider} push, dry run", provider, body, event=event, params={"dry_run": "true"}, expect=200)
        # Azure DevOps's delivery id is the body's `id`, already seen above: each push its own.
        if provider == "azure-devops":
            body = json.dumps(json.loads(body) | {"id": c.delivery_id()}).encode()
        c.webhook(f"{provider} push, queued", provider, body, event=event, expect=202)
        if provider == "azure-devops":
            body = json.dumps(json.loads(body) | {"id": c.delivery_id()}).encode()
        c.webhook(f"{provider} push again, already queued", provider, body, event=event, expect=200)
        c.webhook(f"{provider} push, bad signature", provider, body, event=event, secret="wrong-secret-0123456789",
                  expect=401)
        c.webhook(f"{provider} push, unsigned", provider, body, event=event, sign=False, expect=401)
        c.webhook(f"{provider} push, not a push body", provider, b"[1,2,3]", event=event, expect=400)
    gh = (fixtures / "github/gp-push.json").read_bytes()
    delivery = c.delivery_id()
    c.webhook("github delivery", "github", gh, delivery=delivery, expect=200)
    c.webhook("github delivery again (duplicate)", "github", gh, delivery=delivery, expect=200)
    # Two deployments of git-github waiting: the first lease supersedes the older one.
    c.webhook("github push of a newer commit", "github", newer_commit(gh, "a" * 40), expect=202)
    c.webhook("bitbucket-server branch deletion", "bitbucket-server",
              (fixtures / PUSH_FIXTURES["bitbucket-server"][0]).read_bytes(), event="repo:refs_changed", expect=200)
    c.webhook("github ping", "github", (fixtures / "github/gp-ping.json").read_bytes(), event="ping", expect=200)
    c.webhook("github tag push", "github", (fixtures / "github/ok-push-payload.json").read_bytes(), expect=200)
    c.webhook("github create", "github", (fixtures / "github/gp-create.json").read_bytes(), event="create",
              expect=200)
    c.webhook("gitlab tag push", "gitlab", (fixtures / "gitlab/gp-tag-event.json").read_bytes(),
              event="Tag Push Hook", expect=200)
    c.webhook("gitea delete", "gitea", (fixtures / "gitea/gp-delete-event.json").read_bytes(), event="delete",
              expect=200)
    form = b"payload=" + requests.utils.quote(gh.decode(), safe="").encode()
    c.webhook("github push, form-encoded", "github", form, expect=200,
              extra_headers={"Content-Type": "application/x-www-form-urlencoded"})
    c.webhook("github push, dry_run=maybe", "github", gh, params={"dry_run": "maybe"}, expect=400)
    c.webhook("github push, empty dry_run", "github", gh, params={"dry_run": ""}, expect=400)
    c.webhook("github push, not JSON", "github", b"not json", expect=400)
    c.call("unknown git provider", "POST", f"{O}/webhooks/svn", token=None, data=b"{}",
           headers={"Content-Type": "application/json"}, expect=404)
    c.call("git webhook, bad organization id", "POST", "/organization/bad!org/webhooks/github", token=None,
           data=gh, headers=push_headers("github", gh, "push", c.delivery_id()), expect=(400, 404))
    big = b'{"ref":"refs/heads/main","pad":"' + b"a" * (25 * MIB + 10) + b'"}'
    c.webhook("github push above 25 MiB", "github", big, expect=413)
    c.webhook("github push to an organization without its secret", "github", gh, org=OTHER, expect=401)


def image_tags(c):
    T = c.tokens
    C, J = f"{O}/container/deploy", f"{O}/job/deploy"
    c.call("container/deploy", "POST", C, token=T["deploy"],
           json_body={"image_name": "ghcr.io/acme/api", "tag": "1.1.0"}, expect=202)
    c.call("container/deploy, same tag", "POST", C, token=T["deploy"],
           json_body={"image_name": "ghcr.io/acme/api", "tag": "1.1.0"}, expect=200)
    c.call("container/deploy, GLOB policy", "POST", C, token=T["deploy"],
           json_body={"image_name": "acme/api", "tag": "release-2"}, expect=(200, 202))
    c.call("container/deploy, nothing runs the image", "POST", C,
           json_body={"image_name": "acme/unknown", "tag": "1.0.0"}, expect=200)
    c.call("container/deploy, dry run", "POST", C, params={"dry_run": "1"},
           json_body={"image_name": "ghcr.io/acme/api", "tag": "1.2.0"}, expect=200)
    c.call("container/deploy, bad tag", "POST", C, json_body={"image_name": "acme/api", "tag": "-bad"}, expect=400)
    c.call("container/deploy, no tag", "POST", C, json_body={"image_name": "acme/api"}, expect=400)
    c.call("container/deploy, no token", "POST", C, token=None, json_body={"image_name": "acme/api", "tag": "1"},
           expect=401)
    c.call("container/deploy, manage token", "POST", C, token=T["manage"],
           json_body={"image_name": "acme/api", "tag": "1"}, expect=403)
    c.call("container/deploy, text/plain", "POST", C, data=b'{"image_name":"a","tag":"1"}',
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("container/deploy, 300 KiB", "POST", C, data=b'{"image_name":"' + b"a" * (300 * KIB) + b'","tag":"1"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("job/deploy", "POST", J, token=T["deploy"], json_body={"image_name": "ghcr.io/acme/api", "tag": "1.1.0"},
           expect=202)
    c.call("job/deploy, refused by the policy", "POST", J,
           json_body={"image_name": "ghcr.io/acme/api", "tag": "2.0.0-rc"}, expect=200)
    c.call("job/deploy, bad image", "POST", J, json_body={"image_name": "Acme/API:1", "tag": "1.0"}, expect=400)
    c.call("job/deploy, another organization's token", "POST", J, token=T["other"],
           json_body={"image_name": "acme/api", "tag": "1"}, expect=403)
    c.call("job/deploy, no token", "POST", J, token=None, json_body={"image_name": "acme/api", "tag": "1"}, expect=401)
    c.call("job/deploy, text/plain", "POST", J, data=b"{}", headers={"Content-Type": "text/plain"}, expect=415)
    c.call("job/deploy, 300 KiB", "POST", J, data=b'{"image_name":"' + b"a" * (300 * KIB) + b'","tag":"1"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("job/deploy, dry_run given twice", "POST", f"{J}?dry_run=1&dry_run=0",
           json_body={"image_name": "acme/api", "tag": "1"}, expect=400)


def registry_webhooks(c, fixtures):
    json_type = {"Content-Type": "application/json"}
    dh = (fixtures / "registry/dockerhub-push.json").read_bytes()
    c.service("hub", {"environment_id": "production", "kind": "CONTAINER", "auto_deploy": True,
                      "image": {"image_name": "acme/api", "tag": "v2.4.0"}},
              label="PUT a service on Docker Hub", expect=201)
    hub = f"{O}/registry-webhooks/dockerhub"
    hook = f"{hub}/{SECRETS['dockerhub']}"
    c.call("dockerhub webhook", "POST", hook, token=None, data=dh, headers=json_type, expect=202)
    c.call("dockerhub webhook again", "POST", hook, token=None, data=dh, headers=json_type, expect=200)
    c.call("dockerhub webhook, dry run", "POST", hook, token=None, data=dh + b"\n", params={"dry_run": "true"},
           headers=json_type, expect=200)
    c.call("dockerhub webhook, wrong secret", "POST", f"{hub}/wrongSecret123456789", token=None, data=dh,
           headers=json_type, expect=401)
    c.call("dockerhub webhook, not a payload", "POST", hook, token=None, data=b'{"a":1}', headers=json_type,
           expect=400)
    c.call("dockerhub webhook above 1 MiB", "POST", hook, token=None, data=b'{"a":"' + b"a" * (MIB + 10) + b'"}',
           headers=json_type, expect=413)
    c.call("dockerhub webhook without its secret", "POST", hub, token=None, data=dh, headers=json_type, expect=401)
    c.call("dockerhub webhook without its secret, dry_run=maybe", "POST", hub, token=None, data=dh,
           params={"dry_run": "maybe"}, headers=json_type, expect=401)
    c.call("dockerhub webhook without its secret, bad organization id", "POST",
           "/organization/bad!org/registry-webhooks/dockerhub", token=None, data=dh, headers=json_type, expect=401)
    c.call("dockerhub webhook without its secret, 2 MiB", "POST", hub, token=None, data=b"a" * (2 * MIB),
           headers=json_type, expect=401)
    c.call("dockerhub webhook, bad organization id", "POST", "/organization/bad!org/registry-webhooks/dockerhub/x",
           token=None, data=dh, headers=json_type, expect=(400, 401))

    packages = f"{O}/registry-webhooks/github"

    def signed(body, event, **kw):
        return push_headers("github", body, event, c.delivery_id(), **kw)

    published = (fixtures / "registry/github-package-published.docker.json").read_bytes()
    c.call("github packages, untagged", "POST", packages, token=None, data=published,
           headers=signed(published, "package"), expect=200)
    body = tagged_package(published, "1.4.0")
    seen = c.json_of(c.call("github packages, no service follows", "POST", packages, token=None, data=body,
                            headers=signed(body, "package"), expect=200))
    if not seen or not seen.get("image_name"):
        c.run.fail({"label": "github packages, no service follows", "method": "POST", "path": packages,
                    "status": 200}, "the scenario expects the image in the answer", short(seen or ""))
    else:
        c.service("ghcr", {"environment_id": "production", "kind": "CONTAINER", "auto_deploy": True,
                           "image": {"registry": seen.get("registry") or "ghcr.io", "image_name": seen["image_name"],
                                     "tag": "0.0.0-old"}}, label="PUT a service following ghcr", expect=201)
    # Each event a new tag (a notification seen before is a duplicate, whatever its delivery id).
    for fixture, event, tag in [("registry/github-package-published.docker.json", "package", "1.5.0"),
                                ("registry/github-registry_package-published.docker.json", "registry_package",
                                 "1.6.0")]:
        body = tagged_package((fixtures / fixture).read_bytes(), tag)
        c.call(f"github packages {event}, queued", "POST", packages, token=None, data=body,
               headers=signed(body, event), expect=202)
        c.call(f"github packages {event}, again", "POST", packages, token=None, data=body,
               headers=signed(body, event), expect=200)
    ping = (fixtures / "github/gp-ping.json").read_bytes()
    push = (fixtures / "github/gp-push.json").read_bytes()
    c.call("github packages ping", "POST", packages, token=None, data=ping, headers=signed(ping, "ping"), expect=200)
    c.call("github packages, another event", "POST", packages, token=None, data=push, headers=signed(push, "push"),
           expect=200)
    no_event = {k: v for k, v in signed(published, "package").items() if k != "X-GitHub-Event"}
    c.call("github packages, no event header", "POST", packages, token=None, data=published, headers=no_event,
           expect=400)
    c.call("github packages, bad signature", "POST", packages, token=None, data=published,
           headers=signed(published, "package", secret="nope-nope-nope-nope"), expect=401)
    big = b'{"a":"' + b"a" * (MIB + 10) + b'"}'
    c.call("github packages above 1 MiB", "POST", packages, token=None, data=big, headers=signed(big, "package"),
           expect=413)
    c.call("github packages, dry_run=yes", "POST", packages, token=None, data=published, params={"dry_run": "yes"},
           headers=signed(published, "package"), expect=400)


def deployments_and_consumers(c):
    T = c.tokens
    D = f"{O}/deployments"
    listed = c.json_of(c.call("list deployments", "GET", D, expect=200))
    deps = listed["items"] if listed else []
    c.call("list deployments of a service", "GET", D, params={"service_id": "git-github"}, expect=200)
    c.call("list QUEUED deployments", "GET", D, params={"status": "QUEUED"}, expect=200)
    c.call("list deployments, empty status", "GET", D, params={"status": ""}, expect=200)
    c.call("list deployments, unknown status", "GET", D, params={"status": "DONE"}, expect=400)
    c.call("list deployments, bad service_id", "GET", D, params={"service_id": "bad!"}, expect=400)
    c.call("list deployments, limit=1", "GET", D, params={"limit": "1"}, expect=200)
    c.call("list deployments, no token", "GET", D, token=None, expect=401)
    c.call("list deployments, consume token", "GET", D, token=T["consume"], expect=403)
    if deps:
        first = f"{D}/{deps[0]['deployment_id']}"
        c.call("GET a deployment", "GET", first, expect=200)
        c.call("GET a deployment, consume token", "GET", first, token=T["consume"], expect=200)
        c.call("GET a deployment, deploy token", "GET", first, token=T["deploy"], expect=403)
        c.call("GET a deployment, no token", "GET", first, token=None, expect=401)
        c.call("GET a deployment of another organization", "GET",
               f"/organization/{OTHER}/deployments/{deps[0]['deployment_id']}", expect=404)
    else:
        c.run.fail({"label": "list deployments", "method": "GET", "path": D, "status": 200},
                   "the scenario expects deployments by now")
    c.call("GET an unknown deployment", "GET", f"{D}/{'0' * 32}", expect=404)
    c.call("GET a deployment, id not hex", "GET", f"{D}/XYZ", expect=404)
    c.call("GET a deployment, bad organization id", "GET", f"/organization/bad!org/deployments/{'0' * 32}",
           expect=400)
    # The CONTAINER's deployment waits for its QOVERY target (no dispatcher): still QUEUED.
    waiting = [d for d in deps if d.get("service_id") == "container"]

    consume = T["consume"]
    leased = c.json_of(c.call("lease up to 10", "POST", f"{D}/lease", token=consume,
                              json_body={"max": 10, "lease_seconds": 60}, expect=200))
    leased = leased["items"] if leased else []
    c.call("lease, empty body", "POST", f"{D}/lease", token=consume, data=b"", expect=200)
    c.call("lease, wait_seconds=1", "POST", f"{D}/lease", token=consume, json_body={"wait_seconds": 1}, expect=200)
    c.call("lease, max=11", "POST", f"{D}/lease", token=consume, json_body={"max": 11}, expect=400)
    c.call("lease, unknown field", "POST", f"{D}/lease", token=consume, json_body={"count": 1}, expect=400)
    c.call("lease, text/plain", "POST", f"{D}/lease", token=consume, data=b"{}",
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("lease, 300 KiB", "POST", f"{D}/lease", token=consume, data=b'{"x":"' + b"a" * (300 * KIB) + b'"}',
           headers={"Content-Type": "application/json"}, expect=413)
    c.call("lease, manage token", "POST", f"{D}/lease", token=T["manage"], json_body={}, expect=403)
    c.call("lease, no token", "POST", f"{D}/lease", token=None, json_body={}, expect=401)
    if len(leased) < 2:
        c.run.fail({"label": "lease up to 10", "method": "POST", "path": f"{D}/lease", "status": 200},
                   "the scenario expects at least two leased deployments", f"{len(leased)} leased")
        return
    big = b"a" * (300 * KIB)
    json_type = {"Content-Type": "application/json"}
    a = leased[0]
    A = f"{D}/{a['deployment_id']}"
    lease_a = {"lease_id": a["lease_id"]}
    c.call("extend", "POST", f"{A}/extend", token=consume, json_body=lease_a | {"lease_seconds": 120}, expect=200)
    c.call("extend, another lease", "POST", f"{A}/extend", token=consume, json_body={"lease_id": "nope"}, expect=409)
    c.call("extend, lease_seconds=5", "POST", f"{A}/extend", token=consume, json_body=lease_a | {"lease_seconds": 5},
           expect=400)
    c.call("extend, text/plain", "POST", f"{A}/extend", token=consume, data=b"{}",
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("extend, 300 KiB", "POST", f"{A}/extend", token=consume, data=b'{"lease_id":"' + big + b'"}',
           headers=json_type, expect=413)
    c.call("extend, manage token", "POST", f"{A}/extend", token=T["manage"], json_body=lease_a, expect=403)
    c.call("extend, no token", "POST", f"{A}/extend", token=None, json_body=lease_a, expect=401)
    c.call("ack", "POST", f"{A}/ack", token=consume, json_body=lease_a, expect=204)
    c.call("ack again", "POST", f"{A}/ack", token=consume, json_body=lease_a, expect=409)
    c.call("ack, no lease_id", "POST", f"{A}/ack", token=consume, json_body={}, expect=400)
    c.call("ack, text/plain", "POST", f"{A}/ack", token=consume, data=b"{}", headers={"Content-Type": "text/plain"},
           expect=415)
    c.call("ack, 300 KiB", "POST", f"{A}/ack", token=consume, data=b'{"lease_id":"' + big + b'"}', headers=json_type,
           expect=413)
    c.call("ack, manage token", "POST", f"{A}/ack", token=T["manage"], json_body=lease_a, expect=403)
    c.call("ack, no token", "POST", f"{A}/ack", token=None, json_body={"lease_id": "x"}, expect=401)
    result = {"status": "SUCCEEDED", "message": "deployed", "url": "https://console.example.com/1"}
    c.call("result", "POST", f"{A}/result", token=consume, json_body=result, expect=200)
    c.call("result, the same again", "POST", f"{A}/result", token=consume, json_body=result, expect=200)
    c.call("result, another one", "POST", f"{A}/result", token=consume, json_body={"status": "FAILED"}, expect=409)
    c.call("result, unknown status", "POST", f"{A}/result", token=consume, json_body={"status": "OK"}, expect=400)
    c.call("result, text/plain", "POST", f"{A}/result", token=consume, data=b"{}",
           headers={"Content-Type": "text/plain"}, expect=415)
    c.call("result, 300 KiB", "POST", f"{A}/result", token=consume,
           data=b'{"status":"SUCCEEDED","message":"' + big + b'"}', headers=json_type, expect=413)
    c.call("result, manage token", "POST", f"{A}/result", token=T["manage"], json_body={"status": "SUCCEEDED"},
           expect=403)
    c.call("result, no token", "POST", f"{A}/result", token=None, json_body={"status": "SUCCEEDED"}, expect=401)
    c.call("GET a deployment with its result", "GET", A, expect=200)
    c.call("redeploy, consume token", "POST", f"{A}/redeploy", token=consume, expect=403)
    c.call("redeploy, a query parameter", "POST", f"{A}/redeploy", params={"dry_run": "true"}, expect=400)
    c.call("redeploy a delivered deployment", "POST", f"{A}/redeploy", expect=202)
    c.call("redeploy it again: no longer the newest", "POST", f"{A}/redeploy", expect=409)
    c.call("redeploy, no token", "POST", f"{A}/redeploy", token=None, expect=401)

    b = leased[1]
    B = f"{D}/{b['deployment_id']}"
    lease_b = {"lease_id": b["lease_id"]}
    c.call("nack", "POST", f"{B}/nack", token=consume, json_body=lease_b | {"retry_after_seconds": 30}, expect=204)
    c.call("nack again", "POST", f"{B}/nack", token=consume, json_body=lease_b, expect=409)
    c.call("nack, retry_after_seconds=99999", "POST", f"{B}/nack", token=consume,
           json_body=lease_b | {"retry_after_seconds": 99999}, expect=400)
    c.call("nack, text/plain", "POST", f"{B}/nack", token=consume, data=b"{}", headers={"Content-Type": "text/plain"},
           expect=415)
    c.call("nack, 300 KiB", "POST", f"{B}/nack", token=consume, data=b'{"lease_id":"' + big + b'"}',
           headers=json_type, expect=413)
    c.call("nack, manage token", "POST", f"{B}/nack", token=T["manage"], json_body=lease_b, expect=403)
    c.call("nack, no token", "POST", f"{B}/nack", token=None, json_body={"lease_id": "x"}, expect=401)
    c.call("GET a deployment after its nack", "GET", B, expect=200)
    c.call("list deployments after a nack", "GET", D, params={"service_id": b["service_id"]}, expect=200)

    U = f"{D}/{'0' * 32}"
    c.call("ack an unknown deployment", "POST", f"{U}/ack", token=consume, json_body={"lease_id": "x"}, expect=404)
    c.call("nack an unknown deployment", "POST", f"{U}/nack", token=consume, json_body={"lease_id": "x"}, expect=404)
    c.call("extend an unknown deployment", "POST", f"{U}/extend", token=consume, json_body={"lease_id": "x"},
           expect=404)
    c.call("result of an unknown deployment", "POST", f"{U}/result", token=consume, json_body={"status": "SUCCEEDED"},
           expect=404)
    c.call("result, id not hex", "POST", f"{D}/nothex/result", token=consume, json_body={"status": "SUCCEEDED"},
           expect=404)
    c.call("redeploy an unknown deployment", "POST", f"{U}/redeploy", expect=404)
    if waiting:
        c.call("result of a QUEUED deployment", "POST", f"{D}/{waiting[0]['deployment_id']}/result", token=consume,
               json_body={"status": "FAILED", "message": "line 1\nline 2"}, expect=200)
    else:
        c.run.fail({"label": "list deployments", "method": "GET", "path": D, "status": 200},
                   "the scenario expects a QUEUED deployment of service container")
    superseded = c.json_of(c.call("list SUPERSEDED deployments", "GET", D, params={"status": "SUPERSEDED"},
                                  expect=200))
    if superseded and superseded["items"]:
        c.call("result of a SUPERSEDED deployment", "POST",
               f"{D}/{superseded['items'][0]['deployment_id']}/result", token=consume,
               json_body={"status": "SUCCEEDED"}, expect=409)
    elif superseded is not None:
        c.run.fail({"label": "list SUPERSEDED deployments", "method": "GET", "path": D, "status": 200},
                   "the scenario expects a SUPERSEDED deployment")
    c.call("list deployments, limit=100", "GET", D, params={"limit": "100"}, expect=200)


def deliveries(c):
    T = c.tokens
    D = f"{O}/deliveries"
    listed = c.json_of(c.call("list deliveries", "GET", D, params={"limit": "100"}, expect=200))
    items = listed["items"] if listed else []
    if listed and listed.get("next_cursor"):
        c.call("list deliveries, page 2", "GET", D, params={"limit": "100", "cursor": listed["next_cursor"]},
               expect=200)
    for source in ["github", "gitlab", "container-api", "job-api", "dockerhub", "github-packages", "azure-devops"]:
        c.call(f"list deliveries from {source}", "GET", D, params={"source": source}, expect=200)
    for outcome in ["REJECTED", "QUEUED", "IGNORED", "DUPLICATE", "NOTHING_TO_DEPLOY"]:
        c.call(f"list {outcome} deliveries", "GET", D, params={"outcome": outcome}, expect=200)
    c.call("list deliveries, unknown source", "GET", D, params={"source": "svn"}, expect=400)
    c.call("list deliveries, unknown outcome", "GET", D, params={"outcome": "OK"}, expect=400)
    c.call("list deliveries, deploy token", "GET", D, token=T["deploy"], expect=403)
    c.call("list deliveries, no token", "GET", D, token=None, expect=401)
    # One of each kind (source, outcome): their bodies differ.
    kinds = set()
    for item in items:
        kind = (item.get("source"), item.get("outcome"))
        if kind not in kinds:
            kinds.add(kind)
            c.call(f"GET a delivery {kind}", "GET", f"{D}/{item['id']}", expect=200)
    c.call("GET an unknown delivery", "GET", f"{D}/{'0' * 32}", expect=404)
    c.call("GET a delivery, id not hex", "GET", f"{D}/abc", expect=404)
    c.call("GET a delivery, no token", "GET", f"{D}/{'0' * 32}", token=None, expect=401)
    c.call("GET a delivery, another organization's token", "GET", f"{D}/{'0' * 32}", token=T["other"], expect=403)
    c.call("GET a delivery, bad organization id", "GET", f"/organization/bad!org/deliveries/{'0' * 32}", expect=400)
    c.call("GET the github secret after deliveries", "GET", f"{O}/webhook-secrets/github", expect=200)


def invalid_organization(c):
    """An organization id that is not an identifier, on every operation under it."""
    bad = "/organization/-bad"
    hex_id = "0" * 32
    for method, path in [
            ("GET", "/services"), ("GET", "/services/api"), ("PATCH", "/services/api"), ("DELETE", "/services/api"),
            ("GET", "/webhook-secrets/github"), ("PUT", "/webhook-secrets/github"),
            ("DELETE", "/webhook-secrets/github"), ("GET", "/tokens"), ("POST", "/tokens"),
            ("DELETE", "/tokens/abc"), ("GET", "/deployments"), ("GET", f"/deployments/{hex_id}"),
            ("POST", f"/deployments/{hex_id}/result"), ("POST", "/deployments/lease"),
            ("POST", f"/deployments/{hex_id}/ack"), ("POST", f"/deployments/{hex_id}/nack"),
            ("POST", f"/deployments/{hex_id}/extend"), ("GET", "/targets"), ("GET", "/targets/x"),
            ("PUT", "/targets/x"), ("DELETE", "/targets/x"), ("GET", "/deliveries"),
            ("GET", f"/deliveries/{hex_id}"), ("POST", "/container/deploy"), ("POST", "/job/deploy"),
            ("POST", "/webhooks/github"), ("POST", "/registry-webhooks/github"),
            ("POST", "/registry-webhooks/dockerhub"), ("POST", "/registry-webhooks/dockerhub/s")]:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        token = None if "webhooks" in path else ADMIN
        c.call(f"invalid organization id: {method} {path}", method, bad + path, token=token, json_body=body)


def document_request_examples(c, doc):
    """The document's request examples, sent as they are: the server takes them."""
    ops = doc.spec["paths"]

    def example(path, method):
        return ops[path][method]["requestBody"]["content"]["application/json"]

    c.call("the document's TokenInput example", "POST", f"{O}/tokens",
           json_body=example("/organization/{org}/tokens", "post")["example"], expect=201)
    for name, ex in example("/organization/{org}/targets/{target_id}", "put")["examples"].items():
        c.call(f"the document's TargetInput example {name}", "PUT", f"{O}/targets/doc-{name.lower()}",
               json_body=ex["value"], expect=201)
    service = doc.spec["components"]["schemas"]["ServiceInput"]["example"]
    target = (service.get("deploy_target") or {}).get("target_id")
    if target:
        c.call("the target the ServiceInput example names", "PUT", f"{O}/targets/{target}",
               json_body={"type": "WEBHOOK", "url": "http://127.0.0.1:9/x"}, expect=(200, 201))
    c.call("the document's ServiceInput example", "PUT", f"{O}/services/doc-example", json_body=service, expect=201)
    c.call("the document's ImageTag example", "POST", f"{O}/container/deploy",
           json_body=doc.spec["components"]["requestBodies"]["ImageTag"]["content"]["application/json"]["example"],
           expect=(200, 202))
    # Without waiting: nothing may be left to lease.
    c.call("the document's LeaseInput example", "POST", f"{O}/deployments/lease", token=c.tokens["consume"],
           json_body=example("/organization/{org}/deployments/lease", "post")["example"] | {"wait_seconds": 0},
           expect=200)


# ----------------------------------------------------------------------------------------------
# The body buffer's answers


def body_buffer(c):
    """On a server whose body buffer is 1 MiB: 413 on any route for a larger Content-Length,
    and 503 with Retry-After while bodies held open fill it."""
    above = b"a" * (MIB + MIB // 2)
    c.call("GET /health with a 1.5 MiB body", "GET", "/health", token=None, data=above, expect=413)
    c.call("GET services with a 1.5 MiB body", "GET", f"{O}/services", data=above, expect=413)
    c.call("DELETE a token with a 1.5 MiB body", "DELETE", f"{O}/tokens/abc", data=above, expect=413)
    c.call("GET a deployment with a 1.5 MiB body", "GET", f"{O}/deployments/{'0' * 32}", data=above, expect=413)
    c.call("a 1.5 MiB git webhook (its route takes 25 MiB)", "POST", f"{O}/webhooks/github", token=None, data=above,
           headers=push_headers("github", above, "push", c.delivery_id()), expect=413)
    # With its secret set, a git webhook's body is read (and held) before it is verified.
    c.call("PUT the github secret", "PUT", f"{O}/webhook-secrets/github", json_body={"secret": SECRETS["github"]},
           expect=204)
    auth = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    # Two of 600 KiB, or five of 240 KiB for the routes that take 256 KiB: 1.2 MiB in all.
    if not c.busy("git webhook while the body buffer is full", "POST", f"{O}/webhooks/github",
                  {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": c.delivery_id(),
                   "X-Hub-Signature-256": "sha256=" + "0" * 64}, declared=700 * KIB, sent=600 * KIB, count=2):
        return
    for label, method, path in [("image tag", "POST", f"{O}/container/deploy"),
                                ("PUT a secret", "PUT", f"{O}/webhook-secrets/gitlab"),
                                ("ack", "POST", f"{O}/deployments/{'0' * 32}/ack"),
                                ("create a token", "POST", f"{O}/tokens")]:
        if not c.busy(f"{label} while the body buffer is full", method, path, auth, declared=250 * KIB,
                      sent=240 * KIB, count=5):
            return


# ----------------------------------------------------------------------------------------------
# Records the server cannot read


def unreadable_records(c, binary, database, log):
    """500 INTERNAL: records written by the server, then corrupted in its database while it
    is stopped, then read by it again."""
    push = json.dumps({"ref": "refs/heads/main", "before": "1" * 40, "after": "2" * 40,
                       "repository": {"clone_url": "https://github.com/acme/shop.git"}, "commits": []}).encode()
    git = {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"}
    with Server(binary, database, log) as server:
        c.base = server.base
        c.call("PUT the github secret", "PUT", f"{O}/webhook-secrets/github", json_body={"secret": SECRETS["github"]},
               expect=204)
        for target in ("t1", "t2"):
            c.call(f"PUT target {target}", "PUT", f"{O}/targets/{target}",
                   json_body={"type": "WEBHOOK", "url": "http://127.0.0.1:9/x"}, expect=201)
        c.service("s1", {"environment_id": "p", "kind": "APPLICATION", "auto_deploy": True, "git_repository": git,
                         "deploy_target": {"target_id": "t2"}}, label="PUT service s1 (on target t2)", expect=201)
        c.service("s2", {"environment_id": "p", "kind": "APPLICATION", "auto_deploy": True, "git_repository": git},
                  label="PUT service s2 (pull)", expect=201)
        c.call("a push queues a deployment", "POST", f"{O}/webhooks/github", token=None, data=push,
               headers=push_headers("github", push, "push", c.delivery_id()), expect=202)
        leased = c.json_of(c.call("lease", "POST", f"{O}/deployments/lease", json_body={}, expect=200))
        lease = leased["items"][0] if leased and leased["items"] else None
    # The server's own tables: a change of their layout shows here first.
    db = sqlite3.connect(database)
    try:
        with db:
            db.execute("UPDATE targets SET spec = '{not json' WHERE id = 't1'")
            db.execute("UPDATE services SET data = '{not json' WHERE id = 's1'")
            db.execute("UPDATE deployments SET data = '{not json'")
            db.execute("UPDATE webhook_secrets SET secret = 'garbage'")
    except sqlite3.Error as e:
        c.run.fail({"label": "corrupt the database", "method": "-", "path": str(database.name), "status": "-"},
                   "the records to corrupt are not where this script looks for them", repr(e))
        return
    finally:
        db.close()
    with Server(binary, database, log) as server:
        c.base = server.base
        c.call("GET a corrupt target", "GET", f"{O}/targets/t1", expect=500)
        c.call("DELETE a corrupt target", "DELETE", f"{O}/targets/t1", expect=(204, 500))
        c.call("DELETE the target a corrupt service names", "DELETE", f"{O}/targets/t2", expect=(409, 500))
        c.call("list targets", "GET", f"{O}/targets", expect=(200, 500))
        c.call("list services, one corrupt", "GET", f"{O}/services", expect=500)
        c.call("PATCH a corrupt service", "PATCH", f"{O}/services/s1", json_body={"auto_deploy": False}, expect=500)
        c.call("PUT over a corrupt service", "PUT", f"{O}/services/s1",
               json_body={"environment_id": "p", "kind": "JOB", "image": {"image_name": "a/b", "tag": "1"}},
               expect=(200, 201, 500))
        c.call("a push with an unreadable secret", "POST", f"{O}/webhooks/github", token=None, data=push,
               headers=push_headers("github", push, "push", c.delivery_id()), expect=(401, 500))
        c.call("list deliveries", "GET", f"{O}/deliveries", expect=200)
        c.call("GET a corrupt service", "GET", f"{O}/services/s1", expect=500)
        c.call("GET an unreadable secret", "GET", f"{O}/webhook-secrets/github", expect=(200, 500))
        c.call("PUT over an unreadable secret", "PUT", f"{O}/webhook-secrets/github",
               json_body={"secret": SECRETS["github"] + "x"}, expect=(204, 500))
        c.call("DELETE a corrupt service", "DELETE", f"{O}/services/s1", expect=(204, 500))
        c.call("list corrupt deployments", "GET", f"{O}/deployments", expect=500)
        if lease is None:
            c.run.fail({"label": "lease", "method": "POST", "path": f"{O}/deployments/lease", "status": 200},
                       "the scenario expects a leased deployment")
            return
        D = f"{O}/deployments/{lease['deployment_id']}"
        lease_id = {"lease_id": lease["lease_id"]}
        c.call("extend a corrupt deployment", "POST", f"{D}/extend", json_body=lease_id, expect=(200, 500))
        c.call("nack a corrupt deployment", "POST", f"{D}/nack", json_body=lease_id, expect=(204, 500))
        c.call("ack a corrupt deployment", "POST", f"{D}/ack", json_body=lease_id, expect=(204, 409, 500))
        c.call("result of a corrupt deployment", "POST", f"{D}/result", json_body={"status": "SUCCEEDED"},
               expect=(200, 500))


# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=Path, help="the autodeploy binary")
    parser.add_argument("repo_root", type=Path, help="the repository (infra/openapi.yaml, tests/fixtures)")
    parser.add_argument("--document", type=Path,
                        help="the OpenAPI document to check against (default: REPO_ROOT/infra/openapi.yaml)")
    args = parser.parse_args()
    doc = Document(args.document or args.repo_root / "infra/openapi.yaml")
    fixtures = args.repo_root / "tests/fixtures/webhooks"
    run = Conformance(doc)
    # A SIGTERM unwinds like an error: every server started is stopped, the directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openapi-conformance-") as tmp:
        tmp = Path(tmp)
        log = tmp / "server.log"
        with Server(args.binary, tmp / "main.db", log) as server:
            c = Client(run, server.base)
            routing_and_auth(c, doc)
            tokens(c)
            webhook_secrets(c)
            targets(c)
            services(c)
            git_webhooks(c, fixtures)
            image_tags(c)
            registry_webhooks(c, fixtures)
            deployments_and_consumers(c)
            deliveries(c)
            invalid_organization(c)
            document_request_examples(c, doc)
        # The smallest body buffer; bodies held open must outlast the wait for their refusal.
        limits = ["--max-body-buffer", "1MiB", "--body-timeout", "600"]
        with Server(args.binary, tmp / "limits.db", log, limits) as server:
            body_buffer(Client(run, server.base))
        unreadable_records(Client(run, None), args.binary, tmp / "fault.db", log)
    for where, error in doc.example_errors():
        run.fail({"label": "the document's example", "method": "-", "path": where, "status": "-"},
                 "the example does not validate against its schema", error)
    missing = sorted(doc.operation_ids() - run.operations_seen)
    if missing:
        run.fail({"label": "coverage", "method": "-", "path": "-", "status": "-"},
                 "operations of the document this script never reached", ", ".join(missing))
    seconds = time.monotonic() - started
    print(f"{run.requests} requests over {len(run.operations_seen)} operations in {seconds:.1f} s; "
          f"{len(run.failures)} mismatches with {doc.path.name}")
    print("statuses: " + ", ".join(f"{status} x{n}" for status, n in sorted(run.statuses.items())))
    for line in run.summary():
        print(line)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
