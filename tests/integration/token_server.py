#!/usr/bin/env python3
"""A small Docker registry token server for prepull's integration tests.

GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] with optional
HTTP Basic credentials answers {"token": JWT, "access_token": JWT, "expires_in": N,
"issued_at": ...}. The JWT is RS256, signed by `openssl dgst -sha256 -sign KEY`
(the standard library has no RSA), and carries the signing certificate in its `x5c`
header: distribution 2.8 (registry/auth/token/token.go, VerifySigningKey) prefers
x5c, verifies that chain against `rootcertbundle` and takes the leaf's public key,
so the registry's rootcertbundle is just this certificate.

Policy:
  * --public REPO (repeatable): anonymous callers get pull on these repositories.
  * --user USER:PASS (repeatable): these users get pull,push on every repository.
  * Wrong credentials -> 401. Anonymous on a private repo -> a token with no access
    (as Docker Hub does), so the registry answers 401/insufficient_scope.
Every request is logged to stderr as: user, scopes granted (never the password).
--jwt-exp-offset N puts exp = now+N in the JWT while expires_in still says --expiry
(the registry's own leeway, 60 s in distribution 2.x, applies on top of exp).
POST /token with a form body grant_type=refresh_token&refresh_token=R&service=S&scope=...
(docker's identity-token grant) answers the same JSON; --refresh-token R:USER
(repeatable) says whose R is; an unknown R -> 400 {"error": "invalid_grant"}.
Faults, for prepull's retries and redirect handling:
  --fail-count N [--fail-skip K] [--fail-status CODE] [--fail-retry-after S]: token
    requests number K+1 .. K+N (GET or POST, counted from 1) answer CODE (503)
    instead of a token, with Retry-After: S when given; logged as "token: injected".
  --redirect-post URL [--redirect-status CODE]: every POST /token answers CODE (307)
    with Location: URL before looking at the body.  POST /_redirect?to=URL[&status=CODE]
    sets the same at run time (an empty `to` turns it off).  POST /token2 is a token
    endpoint that is never redirected (a same-server redirect target).
Every POST is logged with the form fields it carried (names only, never values).
GET /healthz -> 200.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading
from urllib.parse import parse_qs, urlparse


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Signer:
    def __init__(self, key, cert):
        self.key = key
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = [base64.b64encode(der).decode()]

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return signing_input + "." + b64url(sig)


def parse_scope(s):
    # repository:name:pull,push  (the name may contain ':' only as host:port, not here)
    parts = s.split(":")
    if len(parts) < 3:
        return None
    typ, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    return typ, name, [a for a in actions.split(",") if a]


class Handler(BaseHTTPRequestHandler):
    server_version = "prepull-test-token/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("token: " + (fmt % args) + "\n")

    def _json(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _injected_fault(self):
        """True when this token request is one of the --fail-count ones (answered)."""
        cfg = self.server.cfg
        with self.server.lock:
            self.server.requests += 1
            n = self.server.requests
        if not (cfg.fail_skip < n <= cfg.fail_skip + cfg.fail_count):
            return False
        self.server.count("injected")
        sys.stderr.write("token: injected %d for token request %d\n" % (cfg.fail_status, n))
        headers = []
        if cfg.fail_retry_after is not None:
            headers.append(("Retry-After", str(cfg.fail_retry_after)))
        self._json(cfg.fail_status, {"errors": [{"code": "UNAVAILABLE", "message": "injected"}]},
                   headers)
        return True

    def do_POST(self):
        cfg = self.server.cfg
        u = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n > 0 else ""
        form = parse_qs(body)
        sys.stderr.write("token: POST %s with fields %s\n" % (u.path, sorted(form)))
        if u.path == "/_fail":
            q = parse_qs(u.query)
            with self.server.lock:
                cfg.fail_skip = self.server.requests + int(q.get("skip", ["0"])[0])
                cfg.fail_count = int(q.get("count", ["1"])[0])
                cfg.fail_status = int(q.get("status", [str(cfg.fail_status)])[0])
                ra = q.get("retry_after", [None])[0]
                cfg.fail_retry_after = int(ra) if ra is not None else None
            return self._json(200, {"armed": True})
        if u.path == "/_redirect":
            q = parse_qs(u.query, keep_blank_values=True)
            cfg.redirect_post = q.get("to", [""])[0]
            cfg.redirect_status = int(q.get("status", [str(cfg.redirect_status)])[0])
            return self._json(200, {"redirect": cfg.redirect_post})
        if u.path not in ("/token", "/token2"):
            return self._json(404, {"error": "not found"})
        if cfg.redirect_post and u.path == "/token":
            self.server.count("redirected")
            sys.stderr.write("token: POST redirected (%d) to %s\n" % (cfg.redirect_status, cfg.redirect_post))
            self.send_response(cfg.redirect_status)
            self.send_header("Location", cfg.redirect_post)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self._injected_fault():
            return
        if form.get("grant_type", [""])[0] != "refresh_token":
            return self._json(400, {"error": "unsupported_grant_type"})
        service = form.get("service", [""])[0]
        if service and service != cfg.service:
            return self._json(400, {"error": "unknown service %r" % service})
        user = cfg.refresh.get(form.get("refresh_token", [""])[0])
        if user is None:
            self.server.count("denied")
            sys.stderr.write("token: unknown refresh token\n")
            return self._json(400, {"error": "invalid_grant"})
        self._issue(user, form.get("scope", []))

    def do_GET(self):
        cfg = self.server.cfg
        u = urlparse(self.path)
        if u.path == "/healthz":
            return self._json(200, {"ok": True})
        if u.path != "/token":
            return self._json(404, {"error": "not found"})
        if self._injected_fault():
            return
        q = parse_qs(u.query)
        service = q.get("service", [""])[0]
        if service and service != cfg.service:
            return self._json(400, {"error": "unknown service %r" % service})

        user = None
        h = self.headers.get("Authorization", "")
        if h.lower().startswith("basic "):
            try:
                u_, _, p_ = base64.b64decode(h[6:].strip()).decode().partition(":")
            except Exception:
                return self._json(400, {"error": "bad basic auth"})
            if cfg.users.get(u_) != p_:
                self.server.count("denied")
                sys.stderr.write("token: bad credentials for user %r\n" % u_)
                return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                                  [("WWW-Authenticate", 'Basic realm="prepull-test-token"')])
            user = u_
        self._issue(user, q.get("scope", []))

    def _issue(self, user, scopes):
        cfg = self.server.cfg
        access = []
        for s in scopes:
            for one in s.split(" "):
                p = parse_scope(one)
                if not p:
                    continue
                typ, name, actions = p
                if typ != "repository":
                    continue
                if user is not None:
                    granted = [a for a in actions if a in ("pull", "push", "delete", "*")]
                elif name in cfg.public:
                    granted = [a for a in actions if a == "pull"]
                else:
                    granted = []
                access.append({"type": typ, "name": name, "actions": granted})

        now = int(time.time())
        claims = {
            "iss": cfg.issuer,
            "sub": user or "",
            "aud": cfg.service,
            "exp": now + (cfg.expiry if cfg.jwt_exp_offset is None else cfg.jwt_exp_offset),
            "nbf": now - 1,
            "iat": now,
            "jti": b64url(os.urandom(12)),
            "access": access,
        }
        token = self.server.signer.sign(claims)
        self.server.count("issued")
        sys.stderr.write("token: issued for user=%r access=%s\n" % (user or "", json.dumps(access)))
        self._json(200, {"token": token, "access_token": token, "expires_in": cfg.expiry,
                         "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.cfg.counts_file:
            with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(self.cfg.counts_file) or ".",
                                             delete=False) as f:
                json.dump(self.counts, f)
            os.replace(f.name, self.cfg.counts_file)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--key", required=True, help="RSA private key (PEM)")
    ap.add_argument("--cert", required=True, help="its certificate (the registry's rootcertbundle)")
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--public", action="append", default=[], help="repository anonymous users may pull")
    ap.add_argument("--user", action="append", default=[], help="USER:PASS with pull,push everywhere")
    ap.add_argument("--expiry", type=int, default=60, help="token lifetime in seconds")
    ap.add_argument("--jwt-exp-offset", type=int, default=None, metavar="SECONDS",
                    help="set the JWT's exp claim to now+SECONDS (may be negative) instead of "
                         "now+--expiry, while the JSON expires_in still says --expiry: a token "
                         "the registry starts refusing before the client expects it to")
    ap.add_argument("--counts-file", default="", help="write {issued: N, denied: N} here")
    ap.add_argument("--refresh-token", action="append", default=[], metavar="TOKEN:USER",
                    help="a refresh token (identity token) the POST grant accepts for USER")
    ap.add_argument("--fail-count", type=int, default=0, help="fail this many token requests")
    ap.add_argument("--fail-skip", type=int, default=0, help="after this many went through")
    ap.add_argument("--fail-status", type=int, default=503)
    ap.add_argument("--fail-retry-after", type=int, default=None, metavar="SECONDS")
    ap.add_argument("--redirect-post", default="", metavar="URL",
                    help="answer every POST /token with a redirect to URL")
    ap.add_argument("--redirect-status", type=int, default=307)
    cfg = ap.parse_args()
    if cfg.bind not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("token_server: loopback only")
    cfg.users = dict(u.split(":", 1) for u in cfg.user)
    cfg.refresh = dict(r.rsplit(":", 1) for r in cfg.refresh_token)
    srv = Server((cfg.bind, cfg.port), Handler)
    srv.cfg = cfg
    srv.counts = {}
    srv.lock = threading.Lock()
    srv.requests = 0
    srv.signer = Signer(cfg.key, cfg.cert)
    sys.stderr.write("token: listening on %s:%d\n" % (cfg.bind, cfg.port))
    srv.serve_forever()


if __name__ == "__main__":
    main()
