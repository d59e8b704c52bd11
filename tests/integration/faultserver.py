#!/usr/bin/env python3
"""A misbehaving blob server for prepull's integration tests (Python 3 stdlib only).

It listens on 127.0.0.1 and fronts a real distribution registry:

  * blob GETs (/v2/<repo>/blobs/sha256:<hex>) are served by this server itself, from
    the registry's storage (<storage>/docker/registry/v2/blobs/sha256/<2>/<hex>/data),
    with Range support (206 + Content-Range; 416 when unsatisfiable);
  * every other /v2/ request (manifests, HEAD, /v2/) is proxied to the registry;
  * "canned" routes override any path with a fixed answer (for bad-input tests);
  * fault rules make chosen blob requests misbehave.

Faults (rule field "fault"):
  reset      headers + `after` body bytes, then a TCP reset (SO_LINGER 0)
  short      headers with the full Content-Length + `after` bytes, then a clean close
  overlong   Content-Length one more than the body, every byte of the body, then a
             clean close: the client has all it asked for, yet the response failed
  flip       the full body with one byte (body index `at`, default the middle) XOR 0xff
  norange    the Range header is ignored: 200 with the whole blob; with `after`, the
             body is cut after that many bytes by a TCP reset (a server that ignores
             Range and drops connections)
  badrange   206 with the right bytes but a Content-Range shifted by one byte
  status     answer `status` (default 500) with a registry-style JSON error body;
             `retry_after` adds a Retry-After header (seconds; "+N" sends an
             HTTP-date N seconds from now)
  stall      headers, then no byte for `seconds` (default 60) or until the client
             closes; then the connection is closed
  redirect   307 to /_cdn/<id>/sha256:<hex> on this server; that URL serves `uses`
             requests (default 1), then answers `expired_status` (default 403)
  unauth     401 with a challenge (error="invalid_token" in bearer mode); in bearer
             mode every token issued so far is revoked, like an expiry
  delay      wait `seconds` before answering normally (with `rate`, the body at that
             many bytes/s rather than the server's pace)
  slow       the body's first `after` bytes (default all) at `rate` bytes/s, the rest
             at the server's pace: a lane that is slow, then recovers

Rule matching (all optional): `path` (regex searched in the request path, default
"/blobs/sha256:"), `method` (default GET), `offset` (the request's byte range covers
this offset), `skip` (let this many matching requests through first), `count` (apply
to this many, default 1; -1 = always).  The first rule that applies wins.

Rules come from --rules FILE or POST /_fault {"rules": [...], "append": false,
"rate": BYTES_PER_S}.  GET /_fault shows them with their counters.
Canned routes: --canned FILE or POST /_canned {"routes": {PATH: SPEC}}; SPEC has
`status` (200), `content_type`, `headers` {}, and one of `body` (text), `body_b64`,
`body_file`; `digest_header` true adds Docker-Content-Digest of the body.  A canned
2xx body on a blob path is served with Range support like a real blob.

Auth (--auth): none (default); "bearer": /v2/ needs a token from GET /_token (no
credentials asked; {"token", "expires_in"}); "basic:USER:PASSWORD".  In bearer mode
--token-expires-in says how long a token lives (default 300), --token-lifetime how
many real seconds the server accepts it (default: the same).

--rate BYTES_PER_S paces every response body (per connection; connections serve one
request at a time).  GET /_stats gives live per-path bytes and request counts;
POST /_stats/reset clears them.

--log FILE: one JSON object per finished request: t (start), t_end, conn, method,
path, range, status, bytes (body bytes sent), fault (or null), client_gone.
"""
import argparse
import base64
import email.utils
import hashlib
import http.client
import http.server
import json
import os
import re
import secrets
import select
import socket
import socketserver
import struct
import sys
import threading
import time

BLOB_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
CDN_RE = re.compile(r"^/_cdn/(?P<id>[0-9a-f]+)/(?P<digest>sha256:[0-9a-f]{64})$")
PIECE = 64 * 1024
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer",
               "upgrade", "proxy-authorization", "proxy-authenticate"}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.rules = []
        self.rate = args.rate
        self.canned = {}
        self.tokens = {}       # token -> expiry (time.time())
        self.tokens_issued = 0
        self.cdn = {}          # id -> {"digest", "uses_left"}
        self.conn_ids = 0
        self.stats_bytes = {}
        self.stats_requests = {}
        self.logf = open(args.log, "a", buffering=1) if args.log else None
        self.auth = args.auth
        if args.rules:
            with open(args.rules) as f:
                self.set_rules(json.load(f))
        if args.canned:
            with open(args.canned) as f:
                self.add_canned(json.load(f))

    def set_rules(self, obj):
        rules = obj.get("rules", []) if isinstance(obj, dict) else obj
        with self.lock:
            fresh = []
            for r in rules:
                r = dict(r)
                r.setdefault("path", "/blobs/sha256:")
                r.setdefault("method", "GET")
                r.setdefault("count", 1)
                r.setdefault("skip", 0)
                r["_rx"] = re.compile(r["path"])
                r["seen"] = 0
                r["applied"] = 0
                fresh.append(r)
            if isinstance(obj, dict) and obj.get("append"):
                self.rules.extend(fresh)
            else:
                self.rules = fresh
            if isinstance(obj, dict) and "rate" in obj:
                self.rate = int(obj["rate"] or 0)

    def add_canned(self, obj):
        routes = obj.get("routes", obj)
        with self.lock:
            for path, spec in routes.items():
                if spec is None:
                    self.canned.pop(path, None)
                else:
                    self.canned[path] = spec

    def pick_rule(self, method, path, rng_start, rng_end):
        """The fault for this request, or None.  Counters move under the lock."""
        with self.lock:
            for r in self.rules:
                if r["method"] != "*" and r["method"] != method:
                    continue
                if not r["_rx"].search(path):
                    continue
                if "offset" in r:
                    if rng_start is None or not (rng_start <= r["offset"] <= rng_end):
                        continue
                r["seen"] += 1
                if r["seen"] <= r["skip"]:
                    continue
                if r["count"] >= 0 and r["applied"] >= r["count"]:
                    continue
                r["applied"] += 1
                return dict(r)
        return None

    def rules_view(self):
        with self.lock:
            return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.rules]

    def log(self, rec):
        if not self.logf:
            return
        with self.lock:
            self.logf.write(json.dumps(rec, sort_keys=True) + "\n")

    def count_bytes(self, path, n):
        with self.lock:
            self.stats_bytes[path] = self.stats_bytes.get(path, 0) + n

    def count_request(self, path):
        with self.lock:
            self.stats_requests[path] = self.stats_requests.get(path, 0) + 1


def parse_range(header, size):
    """-> (start, end) inclusive, None for no/ignored Range, or "bad" (416)."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # unparseable or multi-range: RFC 9110 says ignore it
    if m.group(1) == "":
        n = int(m.group(2))
        if n == 0:
            return "bad"
        return (max(0, size - n), size - 1)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return "bad"
    return (start, min(end, size - 1))


class Source:
    """Bytes of a blob: a file (read per piece) or bytes in memory."""

    def __init__(self, path=None, data=None):
        self.path, self.data = path, data
        self.size = len(data) if data is not None else os.path.getsize(path)

    def reader(self, start, length):
        if self.data is not None:
            view = memoryview(self.data)[start:start + length]
            for i in range(0, len(view), PIECE):
                yield bytes(view[i:i + PIECE])
            return
        with open(self.path, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                b = f.read(min(PIECE, left))
                if not b:
                    return
                left -= len(b)
                yield b


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "prepull-faultserver/1"

    def log_message(self, fmt, *args):  # the JSON log is ours; keep stderr quiet
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError):
            pass  # the client went away between requests

    def setup(self):
        super().setup()
        st = self.server.state
        with st.lock:
            st.conn_ids += 1
            self.conn_id = st.conn_ids

    # ------------------------------------------------------------ plumbing

    def _begin(self):
        self.rec = {"t": round(time.time(), 4), "conn": self.conn_id, "method": self.command,
                    "path": self.path.split("?", 1)[0], "query": self.path.partition("?")[2],
                    "range": self.headers.get("Range"), "status": None, "bytes": 0,
                    "fault": None, "client_gone": False,
                    "auth": bool(self.headers.get("Authorization"))}

    def _end(self):
        self.rec["t_end"] = round(time.time(), 4)
        self.server.state.log(self.rec)

    def _status(self, code, headers=(), length=0):
        self.rec["status"] = code
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_simple(self, code, body=b"", ctype="application/json", headers=()):
        if isinstance(body, str):
            body = body.encode()
        hs = list(headers) + ([("Content-Type", ctype)] if body else [])
        self._status(code, hs, len(body))
        if self.command != "HEAD" and body:
            self._write(body)

    def _write(self, data, rate=None):
        """Writes body bytes at `rate` (default the configured rate); counts them."""
        st = self.server.state
        view = memoryview(data)
        for i in range(0, len(view), PIECE):
            piece = view[i:i + PIECE]
            r = rate or st.rate
            if r:
                if (not hasattr(self, "_pace_t0") or self._pace_req is not self.rec
                        or self._pace_rate != r):
                    self._pace_t0, self._pace_sent, self._pace_req = time.monotonic(), 0, self.rec
                    self._pace_rate = r
                due = self._pace_t0 + self._pace_sent / r
                # Sleep in slices, watching the client: one that went away (a kill, a
                # deadline) ends the request now, so the log has it at once.
                while True:
                    d = due - time.monotonic()
                    if d <= 0:
                        break
                    if self._client_closed():
                        raise ConnectionResetError("client went away while paced")
                    time.sleep(min(d, 0.05))
                self._pace_sent += len(piece)
            self.wfile.write(piece)
            self.rec["bytes"] += len(piece)
            st.count_bytes(self.rec["path"], len(piece))

    def _json_error(self, code, ecode, msg, headers=()):
        body = json.dumps({"errors": [{"code": ecode, "message": msg}]})
        self._send_simple(code, body, headers=headers)

    def _rst(self):
        """Closes the connection with a TCP reset."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            os.close(self.connection.detach())
        except OSError:
            pass

    def _client_closed(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # ------------------------------------------------------------ dispatch

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _handle(self):
        self._begin()
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.rec["client_gone"] = True
            self.close_connection = True
        except OSError as e:
            self.rec["client_gone"] = True
            self.rec["error"] = str(e)
            self.close_connection = True
        finally:
            self._end()

    def _dispatch(self):
        st = self.server.state
        path = self.rec["path"]
        if path == "/healthz":
            return self._send_simple(200, "ok\n", "text/plain")
        m = CDN_RE.match(path)
        if m and self.command in ("GET", "HEAD"):
            st.count_request(path)
            return self._cdn(m.group("id"), m.group("digest"))
        if path.startswith("/_"):
            return self._control(path)
        st.count_request(path)
        spec = st.canned.get(path)
        if spec is not None and self.command in ("GET", "HEAD"):
            if not self._auth_ok():
                return
            return self._canned(spec)
        if not path.startswith("/v2/"):
            return self._json_error(404, "NOT_FOUND", "no such path")
        if not self._auth_ok():
            return
        m = BLOB_RE.match(path)
        if m and self.command == "GET":
            src = self._storage_source(m.group("digest"))
            if src is None:
                return self._json_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return self._blob(src, m.group("digest"))
        return self._proxy()

    # ------------------------------------------------------------ control

    def _control(self, path):
        st = self.server.state
        if path == "/_fault":
            if self.command == "POST":
                st.set_rules(json.loads(self._read_body() or b"{}"))
            return self._send_simple(200, json.dumps({"rules": st.rules_view(), "rate": st.rate}))
        if path == "/_canned" and self.command == "POST":
            st.add_canned(json.loads(self._read_body() or b"{}"))
            return self._send_simple(200, json.dumps({"routes": sorted(st.canned)}))
        if path == "/_stats":
            with st.lock:
                body = json.dumps({"bytes": st.stats_bytes, "requests": st.stats_requests,
                                   "tokens_issued": st.tokens_issued})
            return self._send_simple(200, body)
        if path == "/_stats/reset" and self.command == "POST":
            with st.lock:
                st.stats_bytes, st.stats_requests = {}, {}
            return self._send_simple(200, "{}")
        if path == "/_token":
            tok = secrets.token_hex(16)
            a = st.args
            life = a.token_lifetime if a.token_lifetime is not None else a.token_expires_in
            with st.lock:
                st.tokens[tok] = time.time() + life
                st.tokens_issued += 1
            return self._send_simple(200, json.dumps({"token": tok, "access_token": tok,
                                                      "expires_in": a.token_expires_in}))
        return self._json_error(404, "NOT_FOUND", "no such control path")

    # ------------------------------------------------------------ auth

    def _challenge(self, invalid=False):
        st = self.server.state
        if st.auth.startswith("basic:"):
            return 'Basic realm="prepull-faultserver"'
        host = "127.0.0.1:%d" % self.server.server_address[1]
        m = re.match(r"^/v2/(.+)/(manifests|blobs)/", self.rec["path"])
        c = 'Bearer realm="http://%s/_token",service="prepull-faultserver"' % host
        if m:
            c += ',scope="repository:%s:pull"' % m.group(1)
        if invalid:
            c += ',error="invalid_token"'
        return c

    def _auth_ok(self):
        st = self.server.state
        if st.auth == "none":
            return True
        h = self.headers.get("Authorization") or ""
        if st.auth.startswith("basic:"):
            want = "Basic " + base64.b64encode(st.auth[6:].encode()).decode()
            if h == want:
                return True
            self._json_error(401, "UNAUTHORIZED", "authentication required",
                             [("WWW-Authenticate", self._challenge())])
            return False
        if h.startswith("Bearer "):
            with st.lock:
                exp = st.tokens.get(h[7:])
            if exp and exp > time.time():
                return True
            self._json_error(401, "UNAUTHORIZED", "invalid token",
                             [("WWW-Authenticate", self._challenge(invalid=True))])
            return False
        self._json_error(401, "UNAUTHORIZED", "authentication required",
                         [("WWW-Authenticate", self._challenge())])
        return False

    # ------------------------------------------------------------ serving

    def _storage_source(self, digest):
        root = self.server.state.args.storage
        if not root:
            return None
        hx = digest.split(":", 1)[1]
        p = os.path.join(root, "docker/registry/v2/blobs/sha256", hx[:2], hx, "data")
        return Source(path=p) if os.path.isfile(p) else None

    def _canned(self, spec):
        status = int(spec.get("status", 200))
        if "body_file" in spec:
            with open(spec["body_file"], "rb") as f:
                data = f.read()
        elif "body_b64" in spec:
            data = base64.b64decode(spec["body_b64"])
        else:
            data = spec.get("body", "").encode()
        headers = list(spec.get("headers", {}).items())
        if spec.get("digest_header"):
            headers.append(("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest()))
        ctype = spec.get("content_type", "application/octet-stream")
        self.rec["fault"] = "canned"
        if BLOB_RE.match(self.rec["path"]) and 200 <= status < 300 and self.command == "GET":
            return self._blob(Source(data=data), None, extra=headers, ctype=ctype)
        headers.append(("Content-Type", ctype))
        self._status(status, headers, len(data))
        if self.command != "HEAD":
            self._write(data)

    def _cdn(self, cid, digest):
        st = self.server.state
        with st.lock:
            ent = st.cdn.get(cid)
            ok = ent is not None and ent["digest"] == digest and ent["uses_left"] > 0
            if ok:
                ent["uses_left"] -= 1
        if not ok:
            code = ent["expired_status"] if ent else 403
            self.rec["fault"] = "expired"
            body = ("<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
                    "<Message>Request has expired</Message></Error>")
            return self._send_simple(code, body, "application/xml")
        src = self._storage_source(digest)
        if src is None:
            return self._send_simple(404, "no such blob", "text/plain")
        return self._blob(src, digest, via_cdn=True)

    def _blob(self, src, digest, extra=(), ctype="application/octet-stream", via_cdn=False):
        st = self.server.state
        size = src.size
        rng = parse_range(self.headers.get("Range"), size)
        rs, re_ = (rng if isinstance(rng, tuple) else (0, size - 1))
        rule = st.pick_rule(self.command, self.rec["path"], rs, re_)
        fault = rule["fault"] if rule else None
        self.rec["fault"] = fault or self.rec["fault"]
        base = [("Accept-Ranges", "bytes"), ("Content-Type", ctype)] + list(extra)
        if digest:
            base.append(("Docker-Content-Digest", digest))

        if fault == "delay":
            time.sleep(float(rule.get("seconds", 1)))
        if fault == "status":
            code = int(rule.get("status", 500))
            hs = []
            if "retry_after" in rule:
                ra = str(rule["retry_after"])
                if ra.startswith("+"):  # an HTTP-date that many seconds from now
                    ra = email.utils.formatdate(time.time() + float(ra[1:]), usegmt=True)
                hs.append(("Retry-After", ra))
            names = {500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE", 429: "TOOMANYREQUESTS"}
            return self._json_error(code, names.get(code, "ERROR"), "injected HTTP %d" % code, hs)
        if fault == "unauth":
            if st.auth == "bearer":
                with st.lock:
                    st.tokens.clear()
            return self._json_error(401, "UNAUTHORIZED", "token expired (injected)",
                                    [("WWW-Authenticate", self._challenge(invalid=True))])
        if fault == "redirect" and not via_cdn:
            cid = secrets.token_hex(8)
            with st.lock:
                st.cdn[cid] = {"digest": digest, "uses_left": int(rule.get("uses", 1)),
                               "expired_status": int(rule.get("expired_status", 403))}
            loc = "http://127.0.0.1:%d/_cdn/%s/%s" % (self.server.server_address[1], cid, digest)
            return self._send_simple(307, "", headers=[("Location", loc)])
        if rng == "bad":
            return self._send_simple(416, "", headers=[("Content-Range", "bytes */%d" % size)])

        if rng is None or fault == "norange":
            start, length, code = 0, size, 200
            hs = base
        else:
            start, end = rng
            length, code = end - start + 1, 206
            cr_s, cr_e = start, end
            if fault == "badrange":
                if end + 1 < size:
                    cr_s, cr_e = start + 1, end + 1
                else:
                    cr_s, cr_e = max(0, start - 1), end - 1
            hs = base + [("Content-Range", "bytes %d-%d/%d" % (cr_s, cr_e, size))]
        self._status(code, hs, length + 1 if fault == "overlong" else length)
        if self.command == "HEAD":
            return
        if fault == "stall":
            after = int(rule.get("after", 0))
            if after:
                for piece in src.reader(start, min(after, length)):
                    self._write(piece)
            self.wfile.flush()
            until = time.time() + float(rule.get("seconds", 60))
            while time.time() < until:
                if self._client_closed():
                    self.rec["client_gone"] = True
                    break
                time.sleep(0.05)
            self.close_connection = True
            return
        cut = None
        if fault in ("reset", "short"):
            cut = int(rule.get("after", length // 2))
        elif fault == "norange" and "after" in rule:
            cut = int(rule["after"])
        flip_at = int(rule.get("at", length // 2)) if fault == "flip" else None
        # "slow" and "delay" may pace the body's first bytes at a rate of their own.
        own_rate = int(rule.get("rate", 0)) if fault in ("slow", "delay") else 0
        own_end = int(rule.get("after", length)) if own_rate else 0
        pos = 0
        for piece in src.reader(start, length):
            if cut is not None and pos + len(piece) > cut:
                piece = piece[:cut - pos]
            if flip_at is not None and pos <= flip_at < pos + len(piece):
                b = bytearray(piece)
                b[flip_at - pos] ^= 0xFF
                piece = bytes(b)
            if piece and pos < own_end:
                head = piece[:own_end - pos]
                self._write(head, own_rate)
                self._write(piece[len(head):])
            elif piece:
                self._write(piece)
            pos += len(piece)
            if cut is not None and pos >= cut:
                break
        if fault == "reset" or (fault == "norange" and cut is not None):
            self._rst()
        elif fault in ("short", "overlong"):
            self.close_connection = True

    def _proxy(self):
        st = self.server.state
        if not st.args.registry:
            return self._json_error(404, "NAME_UNKNOWN", "no upstream registry")
        body = self._read_body() if self.command == "POST" else None
        hs = {}
        for k in ("Accept", "Content-Type"):
            # A client may send Accept as several lines (Go's does): all of them.
            vals = self.headers.get_all(k) or []
            if vals:
                hs[k] = ", ".join(vals)
        c = http.client.HTTPConnection(st.args.registry, timeout=60)
        try:
            c.request(self.command, self.path, body=body, headers=hs)
            r = c.getresponse()
            data = r.read()
            out = [(k, v) for k, v in r.getheaders()
                   if k.lower() not in HOP_HEADERS and k.lower() != "content-length"]
            self.rec["fault"] = "proxied"
            self.rec["status"] = r.status
            self.send_response(r.status)
            for k, v in out:
                self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", r.getheader("Content-Length") or "0")
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(data)
        finally:
            c.close()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--registry", help="upstream registry HOST:PORT (plain HTTP)")
    ap.add_argument("--storage", help="the registry's filesystem storage root")
    ap.add_argument("--log", help="JSON-lines request log")
    ap.add_argument("--rules", help="JSON file with fault rules")
    ap.add_argument("--canned", help="JSON file with canned routes")
    ap.add_argument("--rate", type=int, default=0, help="body bytes/s per connection (0 = no limit)")
    ap.add_argument("--auth", default="none", help="none | bearer | basic:USER:PASSWORD")
    ap.add_argument("--token-expires-in", type=int, default=300,
                    help="bearer: the expires_in of issued tokens (seconds)")
    ap.add_argument("--token-lifetime", type=float, default=None,
                    help="bearer: real seconds a token is accepted (default: expires_in)")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.state = State(args)
    print("faultserver on 127.0.0.1:%d" % args.port, flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
