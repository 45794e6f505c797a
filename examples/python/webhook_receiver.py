#!/usr/bin/env python3
"""A webhook receiver for Panoptes outputs, standard library only (docs/outputs.md).

It checks each request's HMAC-SHA256 signature (X-Panoptes-Signature: sha256=<hex> over the
raw body, with the secret the output's `secret_env` names), answers 401 to a bad one, drops
duplicates by X-Panoptes-Id (an output delivers at least once), and prints one JSON line per
new message: {"id", "kind", "camera", "body"}.

    PANOPTES_WEBHOOK_SECRET=... python3 webhook_receiver.py --port 8080

--fail-first N answers 500 to the first N requests (to watch the output retry).
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 << 20


def signature_ok(secret: bytes, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (printed)")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    secret = os.environ.get("PANOPTES_WEBHOOK_SECRET", "").encode()
    if not secret:
        print("set PANOPTES_WEBHOOK_SECRET to the output's secret", file=sys.stderr)
        return 2

    lock = threading.Lock()
    seen = set()
    state = {"to_fail": args.fail_first}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # one line per request on stderr
            sys.stderr.write("receiver: " + (fmt % a) + "\n")

        def answer(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0 or length > MAX_BODY:
                return self.answer(413)
            body = self.rfile.read(length)
            with lock:
                if state["to_fail"] > 0:
                    state["to_fail"] -= 1
                    print(json.dumps({"answered": 500}), flush=True)
                    return self.answer(500)
            if not signature_ok(secret, body, self.headers.get("X-Panoptes-Signature")):
                print(json.dumps({"answered": 401}), flush=True)
                return self.answer(401)
            event_id = self.headers.get("X-Panoptes-Id", "")
            with lock:
                new = event_id not in seen
                seen.add(event_id)
            if new:
                print(
                    json.dumps(
                        {
                            "id": event_id,
                            "kind": self.headers.get("X-Panoptes-Kind"),
                            "camera": self.headers.get("X-Panoptes-Camera"),
                            "body": json.loads(body),
                        }
                    ),
                    flush=True,
                )
            else:
                print(json.dumps({"duplicate": event_id}), flush=True)
            self.answer(204)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
