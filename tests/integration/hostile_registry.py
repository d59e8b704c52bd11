#!/usr/bin/env python3
"""A hostile registry for prepull's fuzz test (Python 3 standard library only).

It serves a real image (an OCI layout made by mkimage.py: its manifests, index and
blobs) the way a registry does -- /v2/ ping, optional bearer auth with a token
endpoint, manifests by tag and digest (GET and HEAD), blobs with Range (206,
Content-Range, 416), optionally through a 307 to a "CDN" path -- and then, per
request, mutates that valid answer:

  status codes and status lines; header names and values (bytes that are not UTF-8,
  control bytes and terminal escapes, huge, repeated, missing); WWW-Authenticate
  challenges and token bodies; manifests and indexes (JSON mutations: wrong sizes,
  digests, media types, types, huge counts; byte-level damage; Docker-Content-Digest
  kept, recomputed or broken); Content-Range; Location; Retry-After; bodies cut short
  or too long; connections closed (FIN or reset) at a random byte; slow drips and
  stalls; chunked encoding, right and wrong.

Some requests are left unmutated (the rate is chosen per seed, 0 included), so some
pulls succeed and reach the code behind the network: verification, the stores.

Seeds.  The server listens on one control port and --ports fuzz ports.  A client
asks GET /_plan?port=P&seed=S on the control port: from then on every request that
arrives on fuzz port P is answered under seed S, numbered from 1 (the request
number), and the answer is the plan of the run (JSON: the image reference to pull,
the mode -- one of --modes --, extra prepull arguments, and kill_first: when set,
the client first runs prepull and kills it after that many seconds, then runs it
again on the same state; all derived from S).
Each request's mutation is drawn from a generator seeded by (S, method, path,
Range, how many times that same request came before), so a run replays with the
same seed even when parallel requests arrive in another order.

Log (--log FILE): one JSON object per request: port, seed, n (request number), m,
path, range, status, rate (the seed's chance of a mutation), mut (the mutations
applied, in words).
GET /_stats on the control port: {"requests": total, "injected": N}, N the requests
that carried a header or a target this server put in an answer (an X-Injected header
from a token with a line break, a request target with a space or a control byte).

Replay a plan without a server: hostile_registry.py --layout DIR --plan-only SEED.
"""
import argparse
import hashlib
import json
import os
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REPO = "fuzz/img"
REASONS = {200: "OK", 206: "Partial Content", 307: "Temporary Redirect", 401: "Unauthorized",
           404: "Not Found", 416: "Range Not Satisfiable"}

# Bytes no client should print as they are.
NASTY = [b"\xe9\x1b[31m", b"\xff\xfe", b"\x00", b"\x1b]0;owned\x07", b"\xc3\x28", b"\xe2\x80\xae",
         b"\x9b2J", b"\r", b"\x7f", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"%s%n%x%p", b"\xc0\xaf",
         b"\x1b[2J\x1b[H", b"\xe2\x80\xa8", b"\t", b"\x08\x08\x08", b"\\u0000", b"\"", b"'", b"\\",
         b"\xef\xbb\xbf", b"\xf0\x9f\x92\xa9", b"\x85", b"\xa0"]
WEIRD_STATUS = [0, 1, 99, 100, 101, 103, 199, 200, 201, 202, 203, 204, 205, 206, 226, 299, 300,
                301, 302, 303, 304, 305, 307, 308, 399, 400, 401, 403, 404, 405, 406, 407, 408,
                409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 425, 426, 429, 431, 451,
                499, 500, 501, 502, 503, 504, 505, 507, 511, 599, 600, 999, 1000, 65536]
BIG_NUMBERS = [0, 1, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 50, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1,
               2 ** 63, 2 ** 64, 2 ** 64 + 1, 10 ** 30, -(2 ** 63)]


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def nasty(rng, n=None):
    """A short string of hostile bytes."""
    out = b""
    for _ in range(n or rng.randint(1, 4)):
        if rng.random() < 0.7:
            out += rng.choice(NASTY)
        else:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return out


def huge(rng):
    return rng.choice([b"A", b"\xe9", b"\x1b[", b"%", b"a,"]) * rng.choice([4096, 9000, 70000, 200000])


class Image:
    """The valid answers: an OCI layout's blobs and tags."""

    def __init__(self, layout):
        self.blobs = {}
        bdir = os.path.join(layout, "blobs", "sha256")
        for name in os.listdir(bdir):
            with open(os.path.join(bdir, name), "rb") as f:
                self.blobs["sha256:" + name] = f.read()
        self.tags = {}
        self.manifests = {}  # digest -> media type
        with open(os.path.join(layout, "index.json")) as f:
            idx = json.load(f)
        for m in idx["manifests"]:
            self.tags[m["annotations"]["org.opencontainers.image.ref.name"]] = m["digest"]
        for dg, data in self.blobs.items():
            try:
                o = json.loads(data)
            except ValueError:
                continue
            if isinstance(o, dict) and o.get("mediaType") in (MT_INDEX, MT_MANIFEST):
                self.manifests[dg] = o["mediaType"]


class Resp:
    def __init__(self, status, headers=(), body=b"", head=False):
        self.status = status
        self.status_line = None  # raw override
        self.headers = [(k.encode() if isinstance(k, str) else k, v.encode("latin-1") if isinstance(v, str) else v)
                        for k, v in headers]
        self.body = body
        self.head = head
        self.set("Content-Length", str(len(body)))
        self.cut = None        # send this many bytes of the whole answer, then close
        self.rst = False       # close with a reset
        self.close = False     # close after the answer
        self.drip = None       # (piece, delay)
        self.stall = None      # (after bytes, seconds)
        self.extra = b""       # bytes after the body
        self.chunked = None    # None or a list of (declared size or raw line, data)
        self.pre = b""         # bytes before the status line (1xx answers)

    def get(self, name):
        n = name.lower().encode()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def set(self, name, value):
        self.remove(name)
        self.headers.append((name.encode(), value.encode("latin-1") if isinstance(value, str) else value))

    def remove(self, name):
        n = name.lower().encode()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != n]

    def wire(self):
        if self.status_line is not None:
            line = self.status_line
        else:
            line = b"HTTP/1.1 %d %s" % (self.status, REASONS.get(self.status, "Whatever").encode())
        out = [self.pre, line, b"\r\n"]
        for k, v in self.headers:
            out += [k, b": ", v, b"\r\n"] if k else [v, b"\r\n"]
        out.append(b"\r\n")
        if not self.head:
            if self.chunked is not None:
                for size, data in self.chunked:
                    out += [size if isinstance(size, bytes) else b"%x" % size, b"\r\n", data, b"\r\n"]
            else:
                out.append(self.body)
        out.append(self.extra)
        return b"".join(out)


# ------------------------------------------------------------------ valid answers

def json_resp(status, obj, headers=(), head=False):
    return Resp(status, [("Content-Type", "application/json")] + list(headers), json.dumps(obj).encode(), head)


def error_resp(status, code, msg, headers=(), head=False):
    return json_resp(status, {"errors": [{"code": code, "message": msg}]}, headers, head)


def parse_range(h, size):
    if not h:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", h)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":
        n = int(m.group(2))
        return "bad" if n == 0 else (max(0, size - n), size - 1)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return "bad"
    return (start, min(end, size - 1))


def blob_resp(data, rng_h, head, digest):
    base = [("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", digest),
            ("Accept-Ranges", "bytes")]
    r = parse_range(rng_h, len(data))
    if r == "bad":
        return Resp(416, base + [("Content-Range", "bytes */%d" % len(data))], b"", head), None
    if r is None:
        return Resp(200, base, data, head), None
    s, e = r
    return Resp(206, base + [("Content-Range", "bytes %d-%d/%d" % (s, e, len(data)))], data[s:e + 1], head), r


# ------------------------------------------------------------------ plans

def make_plan(seed, image, modes):
    rng = random.Random("plan|%d" % seed)
    plan = {"seed": seed}
    plan["mode"] = modes[rng.randrange(len(modes))]
    plan["auth"] = "bearer" if rng.random() < 0.4 else "none"
    plan["redirect"] = rng.random() < 0.25
    plan["rate"] = rng.choice([0.0, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0])
    which = rng.choice(["v1", "v1", "multi", "digest"])
    ref = REPO + ("@" + image.tags["v1"] if which == "digest" else ":" + which)
    plan["ref"] = ref
    args = ["-j", str(rng.choice([1, 2, 4, 8]))]
    if rng.random() < 0.8:
        args += ["--chunk-size", "64K"]
    if which == "multi" and rng.random() < 0.3:
        args += ["--platform", "linux/arm64"]
    if rng.random() < 0.2:
        args.append("-v")
    elif rng.random() < 0.1:
        args.append("-q")
    # A quarter of the runs start from what a run killed part-way left behind.
    plan["kill_first"] = round(rng.uniform(0.05, 1.0), 2) if rng.random() < 0.25 else None
    if plan["mode"].endswith("json"):
        args.append("--json")
    plan["args"] = args
    return plan


# ------------------------------------------------------------------ mutations

def mut_status(r, ctx, rng):
    s = rng.choice(WEIRD_STATUS)
    r.status = s
    if rng.random() < 0.3:
        r.status_line = rng.choice([
            b"HTTP/1.1 %d" % s, b"HTTP/1.0 %d OK" % s, b"HTTP/9.9 200 OK", b"HTTP/1.1 2OO OK",
            b"HTTP/1.1  200  OK", b"ICY 200 OK", b"HTTP/1.1 200 " + nasty(rng), b"",
            b"HTTP/1.1 -1 X", b"HTTP/1.1 200 OK\x00", b"garbage" + nasty(rng),
            b"HTTP/1.1 99999999999999999999 X"])
        return "status line %r" % r.status_line[:40]
    if s == 416 and rng.random() < 0.7:
        r.set("Content-Range", "bytes */%d" % rng.choice([0, 1, len(r.body), 2 ** 63]))
    if s in (429, 503) and rng.random() < 0.6:
        return "status %d, %s" % (s, mut_retry_after(r, ctx, rng))
    return "status %d" % s


def mut_retry_after(r, ctx, rng):
    v = rng.choice([b"0", b"1", b"2", b"-1", b"99999999", b"18446744073709551616", b"1.5", b"nan",
                    b"Wed, 21 Oct 2099 07:28:00 GMT", b"Thu, 01 Jan 1970 00:00:00 GMT", b"",
                    nasty(rng), b"3, 4", huge(rng)[:5000]])
    r.set("Retry-After", v)
    return "Retry-After %r" % v[:40]


def mut_drop_header(r, ctx, rng):
    if not r.headers:
        return "no header to drop"
    k, _ = r.headers.pop(rng.randrange(len(r.headers)))
    return "dropped %r" % k


def mut_header_value(r, ctx, rng):
    if not r.headers:
        return mut_add_header(r, ctx, rng)
    i = rng.randrange(len(r.headers))
    k, v = r.headers[i]
    choice = rng.random()
    if choice < 0.4:
        nv = v + nasty(rng)
    elif choice < 0.6:
        nv = nasty(rng) + v
    elif choice < 0.75:
        nv = huge(rng)
    elif choice < 0.85:
        nv = b""
    else:
        nv = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))).replace(b"\n", b"")
    r.headers[i] = (k, nv)
    return "header %r = %r" % (k, nv[:60])


def mut_add_header(r, ctx, rng):
    c = rng.random()
    if c < 0.3:
        name = b"X-" + nasty(rng).replace(b"\n", b"").replace(b"\r", b"").replace(b":", b"")
        r.headers.insert(rng.randint(0, len(r.headers)), (name, nasty(rng)))
        return "header name %r" % name[:40]
    if c < 0.45:
        # an obsolete line fold, or a line without a colon
        line = rng.choice([b" folded" + nasty(rng), b"\tfolded", b"no colon here", b":", b": empty name"])
        r.headers.insert(rng.randint(0, len(r.headers)), (b"", line))
        return "header line %r" % line[:40]
    if c < 0.6:
        n = rng.choice([100, 1000, 5000])
        for i in range(n):
            r.headers.append((b"X-Many-%d" % i, b"v" * rng.randint(0, 20)))
        return "%d extra headers" % n
    if c < 0.8 and r.headers:
        k, v = rng.choice(r.headers)
        alt = rng.choice([v, v + b"0", b"", nasty(rng), b"1", b"application/json"])
        for _ in range(rng.choice([1, 1, 2, 50])):
            r.headers.insert(rng.randint(0, len(r.headers)), (rng.choice([k, k.upper(), k.lower()]), alt))
        return "repeated %r as %r" % (k, alt[:40])
    name = rng.choice([b"Content-Encoding", b"Transfer-Encoding", b"Connection", b"Warning",
                       b"Docker-Content-Digest", b"Content-Type", b"Link", b"Set-Cookie",
                       b"Docker-Distribution-API-Version", b"Www-Authenticate"])
    val = rng.choice([b"gzip", b"br", b"chunked", b"close", b"keep-alive", b"identity, chunked",
                      b'299 - "' + nasty(rng) + b'"', nasty(rng), huge(rng)[:9000]])
    r.headers.insert(rng.randint(0, len(r.headers)), (name, val))
    return "added %r: %r" % (name, val[:40])


def mut_content_length(r, ctx, rng):
    n = len(r.body)
    v = rng.choice([b"%d" % (n - 1), b"%d" % (n + 1), b"%d" % (n * 2), b"0", b"-1", b"abc",
                    b"%d" % (2 ** 63), b"99999999999999999999999", b"%d, %d" % (n, n + 1),
                    b" %d " % n, b"0x10", b"%d" % (n // 2), b""])
    r.set("Content-Length", v)
    if rng.random() < 0.5:
        r.close = True
    return "Content-Length %r (body %d)" % (v, n)


def mut_no_length(r, ctx, rng):
    r.remove("Content-Length")
    r.close = True
    return "no Content-Length, body ended by close"


def mut_cut(r, ctx, rng):
    total = len(r.wire())
    r.cut = rng.randint(0, max(0, total - 1))
    r.rst = rng.random() < 0.5
    return "connection %s after %d of %d bytes" % ("reset" if r.rst else "closed", r.cut, total)


def mut_long_body(r, ctx, rng):
    r.extra = rng.choice([b"x", b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                          rng.randbytes(rng.randint(1, 70000)), nasty(rng)])
    if rng.random() < 0.5:
        r.close = True
    return "%d bytes after the body" % len(r.extra)


def mut_drip(r, ctx, rng):
    total = len(r.wire())
    delay = rng.choice([0.01, 0.05, 0.2])
    pieces = max(1, int(rng.uniform(0.3, 2.5) / delay))
    r.drip = (max(1, total // pieces), delay)
    return "drip %d bytes every %.2fs" % (r.drip[0], delay)


def mut_stall(r, ctx, rng):
    total = len(r.wire())
    r.stall = (rng.randint(0, total), rng.choice([0.5, 1.2, 2.0, 3.0]))
    if rng.random() < 0.3:
        r.cut = r.stall[0]
    return "stall %.1fs after %d bytes%s" % (r.stall[1], r.stall[0], ", then close" if r.cut is not None else "")


def mut_chunked(r, ctx, rng):
    body = r.body
    r.remove("Content-Length")
    r.set("Transfer-Encoding", "chunked")
    pieces = []
    i = 0
    while i < len(body):
        k = rng.randint(1, 70000)
        pieces.append((k if k <= len(body) - i else len(body) - i, body[i:i + k]))
        i += k
    how = rng.random()
    if how < 0.4:
        pieces.append((0, b""))
        desc = "chunked, valid"
    else:
        bad = rng.choice([b"zz", b"-1", b"ffffffffffffffffffff", b"7fffffffffffffff", b"", b"1;" + nasty(rng)])
        pieces.insert(rng.randint(0, len(pieces)), (bad, b"x"))
        pieces.append((0, b""))
        desc = "chunked, bad size %r" % bad[:20]
    r.chunked = pieces
    if rng.random() < 0.3:
        r.set("Content-Length", str(len(body)))
        desc += " + Content-Length"
    r.close = True
    return desc


def mut_pre(r, ctx, rng):
    r.pre = rng.choice([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n",
                        b"HTTP/1.1 100 Continue\r\n\r\n" * 50, b"\r\n", b"\x00\x00"])
    return "before the answer: %r" % r.pre[:30]


def mut_connection(r, ctx, rng):
    if rng.random() < 0.5:
        r.set("Connection", "close")
        return "Connection: close, kept open"
    r.close = True
    return "closed without Connection: close"


def mut_auth(r, ctx, rng):
    """A 401 with a hostile challenge."""
    port = ctx["port"]
    realm = rng.choice([b"http://127.0.0.1:%d/token" % port, b"http://127.0.0.1:1/token",
                        b"file:///etc/passwd", b"ftp://127.0.0.1/x", b"/token", b"", b"http://",
                        b"http://127.0.0.1:%d/token?x=" % port + nasty(rng), huge(rng)[:9000],
                        b"https://127.0.0.1:%d/token" % port, b"http://[::1]:%d/token" % port,
                        b"http://127.0.0.1:%d/_redirect_loop" % port, b"javascript:alert(1)"])
    forms = [
        b'Bearer realm="' + realm + b'",service="fuzz",scope="repository:' + REPO.encode() + b':pull"',
        b"Bearer realm=" + realm + b",service=fuzz",
        b'Bearer realm="' + realm,
        b'Bearer realm="' + realm + b'",service="' + nasty(rng) + b'",error="invalid_token"',
        b"Bearer " + nasty(rng),
        b"Basic realm=\"" + nasty(rng) + b"\"",
        b"Negotiate", b"", b"Bearer", b"Bearer ,,,,,=,=\",",
        b'Bearer realm="' + realm + b'", realm="http://127.0.0.1:1/x"',
        b'Bearer realm="' + realm + b'",scope="' + b"repository:x:pull " * rng.choice([1, 500]) + b'"',
        b'Digest realm="x", nonce="y", Bearer realm="' + realm + b'"',
        b'Bearer realm="' + realm + b'",service="fuzz",error="insufficient_scope"',
    ]
    ch = rng.choice(forms)
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
    r.status, r.status_line, r.body = 401, None, body
    r.headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        r.headers.append((b"WWW-Authenticate", ch))
        ch = rng.choice(forms)
    return "401 with challenge %r" % r.get("WWW-Authenticate")[:80]


def mut_token_body(r, ctx, rng):
    tok = "fz" + "%08x" % rng.getrandbits(32)
    c = rng.random()
    if c < 0.15:
        body = rng.choice([b"", b"{", b"null", b"[]", b"\"token\"", b"{\"token\": 5}", nasty(rng),
                           b"{\"token\": null, \"access_token\": null}"])
    else:
        o = {"token": tok, "expires_in": 300}
        k = rng.choice(["token", "expires_in", "issued_at", "both", "access_token", "drop"])
        if k == "token":
            o["token"] = rng.choice([tok + "\r\nX-Injected: 1", tok + "\n", "", " ", tok + "\x00x",
                                     tok + nasty(rng).decode("latin-1"), "fz" + "A" * rng.choice([5000, 200000]),
                                     tok + "\u202e\u0000"])
        elif k == "expires_in":
            o["expires_in"] = rng.choice([0, -1, 1, 2 ** 63, -(2 ** 63), 1e308, float("nan") if False else 0.5,
                                          "300", None, [], {}, 10 ** 40])
        elif k == "issued_at":
            o["issued_at"] = rng.choice(["", "yesterday", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                                         nasty(rng).decode("latin-1"), 5])
        elif k == "both":
            o["access_token"] = "fzother"
        elif k == "access_token":
            del o["token"]
            o["access_token"] = tok
        else:
            del o["token"]
        body = json.dumps(o).encode()
        if rng.random() < 0.2:
            body = body.replace(b'"fz', b'"fz\xff\x1b')
    r.body = body
    r.set("Content-Length", str(len(body)))
    return "token body %r" % body[:80]


# --- JSON (manifests, indexes)

def _nodes(o, path=()):
    yield path, o
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _nodes(v, path + (i,))


def _setp(root, path, val):
    if not path:
        return val
    cur = root
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = val
    return root


def mutate_json(o, rng, ctx):
    nodes = list(_nodes(o))
    path, node = rng.choice(nodes)
    key = path[-1] if path else None
    c = rng.random()
    img = ctx["image"]
    if key == "size" or (c < 0.2 and isinstance(node, int)):
        # never a size a disk here could hold if honoured (tens of GB): small lies or impossible ones
        v = rng.choice([0, 1, -1, node + 1 if isinstance(node, int) else 1, max(0, node - 1) if isinstance(node, int) else 0,
                        2 ** 50, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, -(2 ** 63), 1.5, "1", None, 1e308])
        desc = "%s = %r" % ("/".join(map(str, path)), v)
        return _setp(o, path, v), desc
    if key == "digest" or (c < 0.35 and isinstance(node, str) and node.startswith("sha256:")):
        other = rng.choice(list(img.blobs))
        v = rng.choice([other, "sha256:" + "0" * 64, "sha256:" + "A" * 64, "sha256:abc", "sha512:" + "1" * 128,
                        "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:../../../../etc/passwd", "",
                        "sha256:" + "0" * 63 + "\u00e9", "sha256" + "0" * 64, ":", "sha256:" + "g" * 64,
                        node.upper() if isinstance(node, str) else "x", "sha256:" + "a" * 10000])
        return _setp(o, path, v), "%s = %r" % ("/".join(map(str, path)), v[:80])
    if key == "mediaType" or c < 0.45:
        v = rng.choice([MT_INDEX, MT_MANIFEST, MT_DOCKER_MANIFEST, MT_DOCKER_LIST, "application/json", "",
                        MT_MANIFEST.upper(), "application/vnd.oci.image.layer.v1.tar+zstd",
                        "application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                        "application/vnd.in-toto+json", "text/plain\u001b[31m\u00e9", "x" * 5000])
        if isinstance(node, dict):
            node["mediaType"] = v
            return o, "%s/mediaType = %r" % ("/".join(map(str, path)), v[:60])
        return _setp(o, path, v), "%s = %r" % ("/".join(map(str, path)), v[:60])
    if c < 0.55 and isinstance(node, list):
        if node and rng.random() < 0.6:
            n = rng.choice([2, 10, 1000, 20000])
            item = rng.choice(node)
            node.extend(json.loads(json.dumps(item)) for _ in range(n))
            return o, "%s: %d more copies of an entry" % ("/".join(map(str, path)), n)
        node.clear()
        return o, "%s emptied" % "/".join(map(str, path))
    if c < 0.65 and isinstance(node, dict) and node:
        k = rng.choice(list(node))
        del node[k]
        return o, "%s/%s removed" % ("/".join(map(str, path)), k)
    if c < 0.75 and isinstance(node, dict):
        k = rng.choice(["urls", "annotations", "platform", "schemaVersion", "subject", "layers", "manifests",
                        "artifactType", "data", "\u00e9\u001b", "config"])
        v = rng.choice([["http://127.0.0.1:1/x", "file:///etc/passwd"], {"a\u001b[31m": "\u00ff\u0000"},
                        {"os": "linux", "architecture": "amd64"}, 1, None, [], {}, "x", 3, "\u202e" * 10,
                        {"os": "\u0000", "architecture": "\u001b[31m", "variant": "x" * 300}])
        node[k] = v
        return o, "%s/%s = %r" % ("/".join(map(str, path)), k, v)
    if c < 0.85:
        v = rng.choice([None, True, 0, -1, "", "\u0000", {}, [], [[[[[[]]]]]], "\u00e9\u001b[31m", 1e308, 2 ** 64])
        return _setp(o, path, v), "%s = %r" % ("/".join(map(str, path)) or "(root)", v)
    # deep nesting where a value was
    depth = rng.choice([100, 10000])
    v = json.loads("[" * depth + "]" * depth) if depth <= 900 else None
    if v is None:
        return o, "RAW_NEST:%d" % depth
    return _setp(o, path, v), "%s nested %d deep" % ("/".join(map(str, path)), depth)


def mut_manifest_json(r, ctx, rng):
    if not r.body:
        return mut_header_value(r, ctx, rng)
    try:
        o = json.loads(r.body)
    except ValueError:
        return mut_bytes(r, ctx, rng)
    descs = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        o, d = mutate_json(o, rng, ctx)
        descs.append(d)
    body = json.dumps(o, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    for d in descs:
        if d.startswith("RAW_NEST:"):
            n = int(d.split(":")[1])
            body = body[:-1] + b', "deep": ' + b"[" * n + b"]" * n + b"}" if body.endswith(b"}") else body
    if rng.random() < 0.1:
        body = body.replace(b"}", b', "schemaVersion": 2, "schemaVersion": 1}', 1)  # duplicate keys
        descs.append("duplicate key")
    return _rebody(r, body, rng, descs)


def _rebody(r, body, rng, descs):
    r.body = body
    r.set("Content-Length", str(len(body)))
    c = rng.random()
    if c < 0.6:
        r.set("Docker-Content-Digest", sha256(body))
        descs.append("digest header recomputed")
    elif c < 0.8:
        descs.append("digest header kept (wrong)")
    else:
        r.remove("Docker-Content-Digest")
        descs.append("no digest header")
    return "manifest: " + "; ".join(descs)


def mut_bytes(r, ctx, rng):
    b = bytearray(r.body)
    if not b:
        r.body = nasty(rng)
        r.set("Content-Length", str(len(r.body)))
        return "body of %d hostile bytes" % len(r.body)
    c = rng.random()
    if c < 0.3:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        desc = "bit flipped at %d" % i
    elif c < 0.5:
        n = rng.randrange(len(b))
        del b[n:]
        desc = "truncated to %d" % n
    elif c < 0.7:
        i = rng.randrange(len(b) + 1)
        ins = nasty(rng)
        b[i:i] = ins
        desc = "%r inserted at %d" % (bytes(ins[:20]), i)
    elif c < 0.8:
        b = bytearray(b"\xef\xbb\xbf") + b
        desc = "BOM"
    else:
        b = bytearray(rng.randbytes(len(b)))
        desc = "random bytes, same length"
    if ctx["kind"] in ("manifest",):
        return _rebody(r, bytes(b), rng, [desc])
    r.body = bytes(b)
    if rng.random() < 0.8:
        r.set("Content-Length", str(len(b)))
    return "body " + desc


def mut_content_type(r, ctx, rng):
    v = rng.choice([b"application/json", b"text/plain", b"", MT_MANIFEST.upper().encode(), b"application/octet-stream",
                    MT_MANIFEST.encode() + b"; charset=utf-8", MT_MANIFEST.encode() + b" ; x=\xe9",
                    b"application/vnd.docker.distribution.manifest.v1+prettyjws", MT_INDEX.encode(),
                    MT_DOCKER_MANIFEST.encode(), MT_DOCKER_LIST.encode(), nasty(rng), huge(rng)[:9000],
                    b"application/vnd.oci.image.manifest.v1+json\x00"])
    r.set("Content-Type", v)
    return "Content-Type %r" % v[:60]


def mut_digest_header(r, ctx, rng):
    v = rng.choice([b"sha256:" + b"0" * 64, b"sha512:" + b"1" * 128, b"", b"sha256:", nasty(rng),
                    b"sha256:" + b"0" * 64 + b", sha256:" + b"1" * 64, huge(rng)[:9000],
                    rng.choice(list(ctx["image"].blobs)).encode()])
    r.set("Docker-Content-Digest", v)
    return "Docker-Content-Digest %r" % v[:60]


def mut_content_range(r, ctx, rng):
    size = ctx.get("size", len(r.body))
    rg = ctx.get("range")
    s, e = rg if isinstance(rg, tuple) else (0, max(0, len(r.body) - 1))
    v = rng.choice([b"bytes %d-%d/%d" % (s + 1, e + 1, size), b"bytes %d-%d/%d" % (s, e, size + 1),
                    b"bytes %d-%d/*" % (s, e), b"bytes */%d" % size, b"bytes %d-%d/%d" % (s, e - 1, size),
                    b"bytes %d-%d/%d" % (e, s, size), b"bytes -1-5/10", b"bytes 0-%d/%d" % (2 ** 64, 2 ** 64),
                    b"bytes %d-%d/%d" % (s, e, 2 ** 63), b"items 0-1/2", b"", nasty(rng), b"bytes=%d-%d/%d" % (s, e, size),
                    b"bytes %d-%d/%d" % (s, e, size) + nasty(rng), b"bytes 0-0/0",
                    b"bytes %d-%d/%d, bytes 0-1/2" % (s, e, size)])
    r.set("Content-Range", v)
    if rng.random() < 0.3:
        r.status = rng.choice([200, 206])
    return "Content-Range %r (status %d)" % (v[:60], r.status)


def mut_ignore_range(r, ctx, rng):
    data = ctx.get("data")
    if data is None:
        return mut_content_range(r, ctx, rng)
    r.status = 200
    r.body = data
    r.remove("Content-Range")
    r.set("Content-Length", str(len(data)))
    if rng.random() < 0.5:
        r.cut = rng.randint(0, len(data))
        r.rst = rng.random() < 0.5
        return "Range ignored: 200 with the whole blob, cut after %d bytes" % r.cut
    return "Range ignored: 200 with the whole blob"


def mut_wrong_bytes(r, ctx, rng):
    data = ctx.get("data")
    rg = ctx.get("range")
    if data is None or not isinstance(rg, tuple):
        return mut_bytes(r, ctx, rng)
    s, e = rg
    shift = rng.choice([-1, 1, 4096, -4096])
    s2 = min(max(0, s + shift), len(data) - 1)
    r.body = data[s2:s2 + (e - s + 1)]
    r.set("Content-Length", str(len(r.body)))
    return "bytes from offset %d under Content-Range of %d" % (s2, s)


def mut_redirect(r, ctx, rng):
    port = ctx["port"]
    path = ctx["path"]
    loc = rng.choice([b"http://127.0.0.1:%d/_cdn/%s" % (port, ctx.get("digest", "x").encode()),
                      b"/_cdn/" + ctx.get("digest", "x").encode(), b"http://127.0.0.1:1/x", b"file:///etc/passwd",
                      b"ftp://127.0.0.1:%d/x" % port, b"gopher://127.0.0.1:%d/x" % port, b"dict://127.0.0.1:1/x",
                      b"", b"http://", b"http:///x", path.encode("latin-1"), b"//127.0.0.1:%d%s" % (port, path.encode()),
                      b"http://127.0.0.1:%d/_redirect_loop" % port, b"http://127.0.0.1:%d/" % port + nasty(rng),
                      b"http://127.0.0.1:%d/_cdn/" % port + huge(rng)[:9000], b"\x1b[31mhttp://x",
                      b"https://127.0.0.1:%d/x" % port, b"http://user:pass@127.0.0.1:%d/x" % port,
                      b"http://[::1]:%d%s" % (port, path.encode()), b"http://0x7f.1:%d/x" % port])
    r.status = rng.choice([301, 302, 303, 307, 308, 307, 307])
    r.status_line = None
    r.body = b""
    r.headers = [(b"Content-Length", b"0")]
    if rng.random() > 0.1:
        r.headers.append((b"Location", loc))
    if rng.random() < 0.1:
        r.headers.append((b"Location", b"http://127.0.0.1:1/second"))
    return "%d to %r" % (r.status, loc[:80])


# kind -> [(weight, function)]
COMMON = [(6, mut_status), (4, mut_drop_header), (5, mut_header_value), (4, mut_add_header),
          (3, mut_content_length), (1, mut_no_length), (6, mut_cut), (2, mut_long_body), (2, mut_drip),
          (2, mut_stall), (2, mut_chunked), (1, mut_pre), (1, mut_connection), (3, mut_auth),
          (1, mut_retry_after)]
BY_KIND = {
    "ping": COMMON,
    "token": COMMON + [(12, mut_token_body)],
    "manifest": COMMON + [(14, mut_manifest_json), (4, mut_bytes), (4, mut_content_type),
                          (3, mut_digest_header), (2, mut_redirect)],
    "blob": COMMON + [(4, mut_content_range), (3, mut_ignore_range), (3, mut_wrong_bytes), (3, mut_bytes),
                      (3, mut_redirect), (2, mut_digest_header)],
    "other": COMMON + [(3, mut_redirect)],
}


def pick(rng, table):
    total = sum(w for w, _ in table)
    x = rng.uniform(0, total)
    for w, f in table:
        x -= w
        if x <= 0:
            return f
    return table[-1][1]


# ------------------------------------------------------------------ server

class State:
    def __init__(self, args, image):
        self.args = args
        self.image = image
        self.modes = args.modes.split(",")
        self.lock = threading.Lock()
        self.port_seed = {}   # fuzz port -> seed
        self.counter = {}     # seed -> requests so far
        self.occ = {}         # (seed, key) -> occurrences
        self.port_plan = {}   # fuzz port -> plan of its seed
        self.total = 0
        self.injected = 0     # requests with a header or target the server injected
        self.logf = open(args.log, "a", buffering=1) if args.log else None

    def begin(self, port, key):
        with self.lock:
            seed = self.port_seed.get(port)
            self.total += 1
            if seed is None:
                return None, None, 0, 0
            self.counter[seed] = self.counter.get(seed, 0) + 1
            occ = self.occ.get((seed, key), 0)
            self.occ[(seed, key)] = occ + 1
            return seed, self.port_plan[port], self.counter[seed], occ

    def log(self, rec):
        if self.logf:
            line = json.dumps(rec, sort_keys=True)
            with self.lock:
                self.logf.write(line + "\n")


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(60)
        st = self.server.state
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = sock.recv(65536)
                    if not d:
                        return
                    buf += d
                    if len(buf) > 1 << 20:
                        return
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    if len(parts) > 3:  # a space in the target: sent as a redirect gave it
                        with st.lock:
                            st.injected += 1
                        st.log({"port": self.server.server_address[1], "injected": True,
                                "line": lines[0][:300]})
                    return
                method, target, _ = parts
                headers = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length") or 0)
                while len(buf) < n:
                    d = sock.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
                if self.server.control:
                    keep = self.control(method, target)
                else:
                    keep = self.fuzz(method, target, headers)
                if not keep:
                    return
        except (OSError, ValueError):
            return

    # -------------------------------------------------------------- control port

    def control(self, method, target):
        st = self.server.state
        u = urllib.parse.urlsplit(target)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/_plan":
            port, seed = int(q["port"][0]), int(q["seed"][0])
            plan = make_plan(seed, st.image, st.modes)
            with st.lock:
                old = st.port_seed.get(port)
                if old is not None:
                    st.counter.pop(old, None)
                    for k in [k for k in st.occ if k[0] == old]:
                        del st.occ[k]
                st.port_seed[port] = seed
                st.port_plan[port] = plan
                st.counter[seed] = 0
                for k in [k for k in st.occ if k[0] == seed]:
                    del st.occ[k]
            r = json_resp(200, plan)
        elif u.path == "/_stats":
            with st.lock:
                r = json_resp(200, {"requests": st.total, "injected": st.injected})
        else:
            r = json_resp(200 if u.path == "/healthz" else 404, {})
        self.request.sendall(r.wire())
        return True

    # -------------------------------------------------------------- fuzz ports

    def valid(self, method, path, query, headers, seed, plan, ctx):
        head = method == "HEAD"
        im = self.server.state.image
        port = self.server.server_address[1]
        authed = headers.get("authorization", "").startswith("Bearer fz")
        challenge = ('Bearer realm="http://127.0.0.1:%d/token",service="fuzz",scope="repository:%s:pull"'
                     % (port, REPO))
        if path == "/token":
            ctx["kind"] = "token"
            tok = "fz%d-%s" % (seed, hashlib.sha256(query.encode()).hexdigest()[:16])
            return json_resp(200, {"token": tok, "access_token": tok, "expires_in": 300}, head=head)
        m = re.fullmatch(r"/_cdn/(sha256:[0-9a-f]{64})", path)
        if m and m.group(1) in im.blobs:
            ctx["kind"] = "blob"
            dg = m.group(1)
            ctx.update(digest=dg, data=im.blobs[dg], size=len(im.blobs[dg]))
            r, ctx["range"] = blob_resp(im.blobs[dg], headers.get("range"), head, dg)
            return r
        if path == "/_redirect_loop":
            return Resp(307, [("Location", "/_redirect_loop")])
        if not path.startswith("/v2"):
            return error_resp(404, "NOT_FOUND", "no such path", head=head)
        if plan["auth"] == "bearer" and not authed:
            ctx["kind"] = "ping" if path in ("/v2", "/v2/") else "other"
            return error_resp(401, "UNAUTHORIZED", "authentication required",
                              [("WWW-Authenticate", challenge)], head)
        if path in ("/v2", "/v2/"):
            ctx["kind"] = "ping"
            return json_resp(200, {}, [("Docker-Distribution-API-Version", "registry/2.0")], head)
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if not m or m.group(1) != REPO:
            return error_resp(404, "NAME_UNKNOWN", "repository name not known to registry", head=head)
        what, ref = m.group(2), m.group(3)
        if what == "manifests":
            ctx["kind"] = "manifest"
            dg = im.tags.get(ref, ref)
            if dg not in im.manifests:
                return error_resp(404, "MANIFEST_UNKNOWN", "manifest unknown", head=head)
            body = im.blobs[dg]
            return Resp(200, [("Content-Type", im.manifests[dg]), ("Docker-Content-Digest", dg),
                              ("Docker-Distribution-API-Version", "registry/2.0")], body, head)
        ctx["kind"] = "blob"
        if ref not in im.blobs:
            return error_resp(404, "BLOB_UNKNOWN", "blob unknown to registry", head=head)
        ctx.update(digest=ref, data=im.blobs[ref], size=len(im.blobs[ref]))
        if plan["redirect"] and method == "GET":
            return Resp(307, [("Location", "http://127.0.0.1:%d/_cdn/%s" % (port, ref)),
                              ("Docker-Content-Digest", ref)])
        r, ctx["range"] = blob_resp(im.blobs[ref], headers.get("range"), head, ref)
        return r

    def fuzz(self, method, target, headers):
        st = self.server.state
        port = self.server.server_address[1]
        path, _, query = target.partition("?")
        key = "%s %s %s" % (method, path, headers.get("range", ""))
        # A token body may carry "\r\nX-Injected: 1": a client that put it in its
        # Authorization header as it came sent a header of the server's choosing.
        injected = "x-injected" in headers or any(c in target for c in "\r\n\x00 ")
        if injected:
            with st.lock:
                st.injected += 1
        seed, plan, n, occ = st.begin(port, key)
        if seed is None:
            self.request.sendall(error_resp(503, "UNAVAILABLE", "no seed set for this port").wire())
            return False
        ctx = {"kind": "other", "port": port, "path": path, "image": st.image}
        r = self.valid(method, path, query, headers, seed, plan, ctx)
        rng = random.Random("%d|%s|%d" % (seed, key, occ))
        muts = []
        if rng.random() < plan["rate"]:
            table = BY_KIND[ctx["kind"]]
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                muts.append(pick(rng, table)(r, ctx, rng))
        rec = {"port": port, "seed": seed, "n": n, "m": method, "path": path[:200],
               "range": headers.get("range"), "status": r.status, "rate": plan["rate"], "mut": muts}
        if injected:
            rec["injected"] = True
        st.log(rec)
        return self.send(r, bool(muts))

    def send(self, r, mutated):
        sock = self.request
        data = r.wire()
        if r.cut is not None:
            data = data[:r.cut]
        if r.stall is not None:
            at, secs = r.stall
            at = min(at, len(data))
            self._put(data[:at], r)
            time.sleep(secs)
            data = data[at:]
        self._put(data, r)
        if r.cut is not None or r.close or (mutated and r.rst):
            self._close(r.rst)
            return False
        return True

    def _put(self, data, r):
        if r.drip:
            piece, delay = r.drip
            for i in range(0, len(data), piece):
                self.request.sendall(data[i:i + piece])
                time.sleep(delay)
        else:
            self.request.sendall(data)

    def _close(self, rst):
        sock = self.request
        try:
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", required=True, help="OCI layout with tags v1 and multi (mkimage.py)")
    ap.add_argument("--ports", type=int, default=1, help="fuzz ports to open (one per parallel run)")
    ap.add_argument("--ready", help="write {\"control\": PORT, \"fuzz\": [PORTS]} here when listening")
    ap.add_argument("--log", help="JSON lines, one per request")
    ap.add_argument("--modes", default="oci-json,oci-text,containerd-json", help="modes a plan may pick")
    ap.add_argument("--plan-only", type=int, metavar="SEED", help="print the plan of SEED and exit")
    args = ap.parse_args()
    image = Image(args.layout)
    for t in ("v1", "multi"):
        if t not in image.tags:
            sys.exit("hostile_registry: the layout has no tag %s" % t)
    if args.plan_only is not None:
        print(json.dumps(make_plan(args.plan_only, image, args.modes.split(","))))
        return
    st = State(args, image)
    servers = []
    for i in range(args.ports + 1):
        s = Server(("127.0.0.1", 0), Handler)
        s.state = st
        s.control = i == 0
        servers.append(s)
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ports = [s.server_address[1] for s in servers]
    info = {"control": ports[0], "fuzz": ports[1:]}
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            json.dump(info, f)
        os.rename(args.ready + ".tmp", args.ready)
    print(json.dumps(info), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
