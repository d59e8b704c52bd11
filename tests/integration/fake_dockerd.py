#!/usr/bin/env python3
"""A fake Docker Engine API on a unix socket, for what a real dockerd rarely does.

Answers /_ping (Api-Version header), /version, /info (classic image store),
GET /images/ID/json (404 until an image with that config was loaded) and
POST /images/load: the chunked tar body is read and kept (--save DIR/load-N.tar),
its manifest.json remembered, and the answer is HTTP 200 with a JSON message
stream — ending in an error message when --load-error is given, as dockerd does
when a load fails after the 200 has been sent.

Standard library only.
"""
import argparse
import io
import json
import os
import re
import socketserver
import tarfile
from http.server import BaseHTTPRequestHandler


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def make_handler(args, state):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def address_string(self):
            return "unix"

        def log_message(self, fmt, *a):
            print("%s %s" % (self.command, fmt % a), flush=True)

        def reply(self, status, body, ctype="application/json", headers=()):
            data = body if isinstance(body, bytes) else body.encode()
            self.send_response(status)
            self.send_header("Api-Version", args.api_version)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def path_only(self):
            p = self.path.split("?", 1)[0]
            return re.sub(r"^/v[0-9.]+", "", p)

        def do_GET(self):
            p = self.path_only()
            if p == "/_ping":
                return self.reply(200, "OK", "text/plain")
            if p == "/version":
                return self.reply(200, json.dumps({
                    "Version": args.engine_version, "ApiVersion": args.api_version,
                    "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64"}))
            if p == "/info":
                return self.reply(200, json.dumps({
                    "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]],
                    "ServerVersion": args.engine_version}))
            m = re.match(r"^/images/(.+)/json$", p)
            if m:
                img = state["images"].get(m.group(1))
                if img is None:
                    return self.reply(404, json.dumps({"message": "No such image: " + m.group(1)}))
                return self.reply(200, json.dumps({"Id": m.group(1), "RepoTags": img}))
            return self.reply(404, json.dumps({"message": "page not found"}))

        def read_chunked(self):
            out = io.BytesIO()
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline().strip():
                        pass
                    return out.getvalue()
                out.write(self.rfile.read(n))
                self.rfile.readline()

        def do_POST(self):
            p = self.path_only()
            if p != "/images/load":
                return self.reply(404, json.dumps({"message": "page not found"}))
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self.read_chunked()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state["loads"] += 1
            if args.save:
                with open(os.path.join(args.save, "load-%d.tar" % state["loads"]), "wb") as f:
                    f.write(body)
            msgs = [{"stream": "Loading layer\n"}]
            if args.load_error:
                msgs.append({"errorDetail": {"message": args.load_error}, "error": args.load_error})
            else:
                t = tarfile.open(fileobj=io.BytesIO(body))
                man = json.load(t.extractfile("manifest.json"))[0]
                cfg = t.extractfile(man["Config"]).read()
                import hashlib
                cid = "sha256:" + hashlib.sha256(cfg).hexdigest()
                state["images"][cid] = man.get("RepoTags") or []
                for tag in man.get("RepoTags") or []:
                    msgs.append({"stream": "Loaded image: %s\n" % tag})
            self.reply(200, "".join(json.dumps(m) + "\r\n" for m in msgs))

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--api-version", default="1.41")
    ap.add_argument("--engine-version", default="20.10.24")
    ap.add_argument("--load-error", default="")
    ap.add_argument("--save", default="")
    args = ap.parse_args()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    state = {"images": {}, "loads": 0}
    srv = Server(args.socket, make_handler(args, state))
    print("listening on", args.socket, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
