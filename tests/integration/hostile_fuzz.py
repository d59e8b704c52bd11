#!/usr/bin/env python3
"""Drives prepull through hostile_registry.py's mutated answers and checks every run.

One worker per fuzz port of the server.  Run i takes seed BASE+i (or the next of
--seeds), asks the server for that seed's plan (image reference, mode, extra
arguments), runs prepull in a private mount namespace (hostile_sandbox.sh: only its
state dir and its store are writable) under `timeout`, and checks:

  * exit code 0, 1 or 3 (2 only for the deliberately bad arguments of --bad-args;
    a signal, 124/137 from timeout -- a hang --, or the sanitizers' code is a failure);
  * no sanitizer report on stderr;
  * stderr and stdout valid UTF-8 without control characters (line ends aside) and
    without bidi controls; with --json every stdout line a JSON object with an
    "event", no control character in any of its strings, and a "summary" event;
  * no write refused by the read-only namespace ("Read-only file system");
  * every file in the OCI layout's blobs/sha256 and in containerd's content store
    hashes to its name;
  * after exit 0, the OCI layout holds a whole image: every index.json entry, its
    manifest (of an index: one at least), config and layers.

Every failure is printed with its seed, the plan, the requests the server answered
under that seed (number, method, path, mutations) and the stderr; replay one with
HOSTILE_SEEDS=SEED.  The last line on stdout is a JSON summary.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import unicodedata
import urllib.request

BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
SANITIZER_RX = re.compile(rb"ERROR: (AddressSanitizer|LeakSanitizer)|SUMMARY: (AddressSanitizer|"
                          rb"UndefinedBehaviorSanitizer|LeakSanitizer)|: runtime error: ")
BAD_ARGS = [["--chunk-size", "1"], ["-j", "0"], ["--deadline", "-1s"], ["--stall-timeout", "0.5s"],
            ["--chunk-size", "99999999999999999999"], ["--no-such-option"], ["--\x1b[31m"],
            ["--deadline", "nan"], ["--stall-timeout", "nan"],
            ["--per-host", "\udce9\x1b[31m"], ["--platform", "\x1b[31m/\udcff"], ["--store", "bogus:\x1b[2J"]]


def bad_char(ch, allow_nl):
    if ch == "\n" and allow_nl:
        return False
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI


def printable(name, data, problems):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append("%s is not valid UTF-8: %s" % (name, e))
        return None
    for i, ch in enumerate(text):
        if bad_char(ch, True):
            line = text.count("\n", 0, i) + 1
            problems.append("%s line %d has U+%04X: %r" % (name, line, ord(ch), text[max(0, i - 60):i + 20]))
            break
    return text


def walk_strings(o):
    if isinstance(o, str):
        yield o
    elif isinstance(o, dict):
        for k, v in o.items():
            yield k
            yield from walk_strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from walk_strings(v)


def check_output(out, err, json_mode, problems):
    printable("stderr", err, problems)
    text = printable("stdout", out, problems)
    if SANITIZER_RX.search(err) or SANITIZER_RX.search(out):
        problems.append("sanitizer report")
    if b"Read-only file system" in err:
        problems.append("prepull tried to write outside its state dir and store")
    if not json_mode or text is None:
        return
    events = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            o = json.loads(line)
        except ValueError:
            problems.append("stdout line %d is not JSON: %r" % (i, line[:200]))
            continue
        if not isinstance(o, dict) or "event" not in o:
            problems.append("stdout line %d is not an event: %r" % (i, line[:200]))
            continue
        events.append(o["event"])
        for s in walk_strings(o):
            if any(bad_char(ch, False) for ch in s):
                problems.append("stdout line %d has a control character in a string: %r" % (i, s[:200]))
                break
    if "summary" not in events:
        problems.append("no summary event (events: %s)" % events[-10:])


def bad_blobs(d):
    """Files in d that do not hash to their names (d: a blobs/sha256 directory)."""
    bad = []
    if not os.path.isdir(d):
        return bad
    for name in os.listdir(d):
        p = os.path.join(d, name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue  # removed meanwhile (containerd's garbage collection)
        if not stat.S_ISREG(st.st_mode):
            bad.append("%s (not a regular file)" % name)
            continue
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for piece in iter(lambda: f.read(1 << 20), b""):
                    h.update(piece)
        except FileNotFoundError:
            continue  # removed meanwhile (garbage collection)
        if h.hexdigest() != name:
            bad.append("%s (is %s)" % (name, h.hexdigest()))
    return bad


def incomplete_layout(d):
    """What an OCI layout that prepull called done lacks: every index.json entry's
    blob, and under it (an index: at least one manifest) the config and layers."""
    missing = []

    def blob(dg):
        if not isinstance(dg, str) or not dg.startswith("sha256:"):
            missing.append("bad digest %r" % (dg,))
            return None
        p = os.path.join(d, "blobs", "sha256", dg[7:])
        if not os.path.isfile(p):
            missing.append("missing %s" % dg)
            return None
        with open(p, "rb") as f:
            return f.read()

    def manifest(dg, depth=0):
        data = blob(dg)
        if data is None:
            return False
        try:
            o = json.loads(data)
        except ValueError:
            missing.append("%s is not JSON" % dg)
            return False
        if isinstance(o, dict) and isinstance(o.get("manifests"), list) and depth == 0:
            have = [m for m in o["manifests"] if isinstance(m, dict) and
                    os.path.isfile(os.path.join(d, "blobs", "sha256", str(m.get("digest", ""))[7:]))]
            if not have:
                missing.append("no manifest of index %s" % dg)
                return False
            return all(manifest(m["digest"], 1) for m in have)
        if not isinstance(o, dict) or not isinstance(o.get("config"), dict):
            missing.append("%s is no manifest" % dg)
            return False
        ok = blob(o["config"].get("digest")) is not None
        for layer in o.get("layers") or []:
            ok = blob(layer.get("digest") if isinstance(layer, dict) else None) is not None and ok
        return ok

    try:
        with open(os.path.join(d, "index.json")) as f:
            idx = json.load(f)
        entries = idx["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return ["index.json: %s" % e]
    if not entries:
        return ["index.json has no entry"]
    for m in entries:
        manifest(m.get("digest"))
    return missing


class Fuzz:
    def __init__(self, a):
        self.a = a
        self.lock = threading.Lock()
        self.next_i = 0
        self.seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
        self.runs = 0
        self.rcs = {}
        self.modes = {}
        self.failures = []
        self.max_secs = 0.0
        self.shapes = {}  # first error (else warning) line of a run, numbers masked -> runs
        self.end = time.monotonic() + a.seconds
        # On a loaded machine runs are slower: fuzzing goes on past --seconds until the
        # server has answered --min-requests, up to --max-seconds in all.
        self.hard_end = time.monotonic() + max(a.seconds, a.max_seconds or 0)
        self.req0 = 0

    def take_seed(self):
        with self.lock:
            i = self.next_i
            self.next_i += 1
        if self.seeds is not None:
            return self.seeds[i] if i < len(self.seeds) else None
        now = time.monotonic()
        if now >= self.hard_end:
            return None
        if now >= self.end and self.ctl("/_stats")["requests"] - self.req0 >= self.a.min_requests:
            return None
        return self.a.seed_base + i

    def ctl(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.a.control, path), timeout=30) as r:
            return json.loads(r.read())

    def worker(self, w, port):
        while True:
            seed = self.take_seed()
            if seed is None:
                return
            plan = self.ctl("/_plan?port=%d&seed=%d" % (port, seed))
            self.run(w, port, plan)

    def prepare(self, w):
        wd = os.path.join(self.a.work, "w%d" % w)
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(os.path.join(wd, "state"))
        os.makedirs(os.path.join(wd, "oci"))
        return wd

    def run(self, w, port, plan, bad_args=None):
        a = self.a
        wd = self.prepare(w)
        state, oci = os.path.join(wd, "state"), os.path.join(wd, "oci")
        mode = plan["mode"]
        cmd = [a.prepull, "pull", "--plain-http", "--deadline", a.deadline, "--stall-timeout", a.stall,
               "--state-dir", state]
        if mode.startswith("containerd"):
            ns = "fuzz%d" % w
            cmd += ["--store", "containerd:" + a.ctd_sock, "--namespace", ns]
            rw = [state, a.ctd_root]
        else:
            cmd += ["--store", "oci:" + oci]
            rw = [state, oci]
        cmd += bad_args if bad_args is not None else plan["args"]
        cmd.append("127.0.0.1:%d/%s" % (port, plan["ref"]))
        problems = []
        kill = plan.get("kill_first") if bad_args is None else None
        if kill:
            # A first run killed (SIGKILL) part-way leaves partial files, journals and
            # whatever else a kill leaves; the checked run below starts from them.
            kp = os.path.join(wd, "killed.err")
            with open(os.path.join(wd, "killed.out"), "wb") as o, open(kp, "wb") as e:
                krc = subprocess.call(["timeout", "-s", "KILL", "%.2f" % kill, a.sandbox, ":".join(rw), "--"]
                                      + cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
            with open(kp, "rb") as f:
                kerr = f.read()
            if SANITIZER_RX.search(kerr) or krc == a.sanitizer_exit:
                problems.append("sanitizer report in the run killed after %.2fs" % kill)
            elif krc not in (0, 1, 3, 137, -9):  # -9: timeout killed itself with its group
                problems.append("the run killed after %.2fs ended with %d first: %r"
                                % (kill, krc, kerr[-300:]))
        full = ["timeout", "-k", "3", str(a.bound), a.sandbox, ":".join(rw), "--"] + cmd
        outp, errp = os.path.join(wd, "run.out"), os.path.join(wd, "run.err")
        t0 = time.monotonic()
        with open(outp, "wb") as o, open(errp, "wb") as e:
            rc = subprocess.call(full, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        secs = time.monotonic() - t0
        with open(outp, "rb") as f:
            out = f.read()
        with open(errp, "rb") as f:
            err = f.read()
        if rc == 97:
            problems.append("the read-only mount namespace could not be set up: %r" % err[-300:])
        elif bad_args is not None:
            if rc != 2:
                problems.append("exit %d for deliberately bad arguments (expected 2)" % rc)
        elif rc in (124, 137) or rc >= 128 or rc < 0:
            problems.append("hang: killed by timeout after %.1fs" % secs if rc in (124, 137, -9)
                            else "killed by signal %d" % (rc - 128 if rc > 0 else -rc))
        elif rc == a.sanitizer_exit:
            problems.append("sanitizer exit code %d" % rc)
        elif rc not in (0, 1, 3):
            problems.append("exit %d" % rc)
        check_output(out, err, "--json" in cmd and bad_args is None, problems)
        if mode.startswith("containerd"):
            bad = bad_blobs(os.path.join(a.ctd_root, "io.containerd.content.v1.content", "blobs", "sha256"))
            self.ctd_cleanup(ns)
        else:
            bad = bad_blobs(os.path.join(oci, "blobs", "sha256"))
            if rc == 0 and bad_args is None:
                lacks = incomplete_layout(oci)
                if lacks:
                    problems.append("exit 0, yet the layout is not a whole image: %s" % "; ".join(lacks[:5]))
        if bad:
            problems.append("unverified blobs in the store: %s" % ", ".join(bad[:5]))
        shape = "exit %d" % rc
        for ln in err.decode("utf-8", "replace").splitlines():
            if ": error: " in ln or ": warning: " in ln:
                shape = ln.split(": ", 1)[-1]
                shape = re.sub(r"https?://[^\s\"']+", "URL", shape)
                shape = re.sub(r"sha256:[0-9a-f]+", "sha256:H", shape)
                shape = re.sub(r"127\.0\.0\.1:\d+", "HOST", shape)
                shape = re.sub(r"\b\d+(\.\d+)?\b", "N", shape)[:170]
                if ": error: " in ln:
                    break
        with self.lock:
            self.shapes[shape] = self.shapes.get(shape, 0) + 1
            self.runs += 1
            self.rcs[rc] = self.rcs.get(rc, 0) + 1
            self.modes[mode] = self.modes.get(mode, 0) + 1
            self.max_secs = max(self.max_secs, secs)
            if problems:
                self.failures.append(plan["seed"])
                self.report(plan, cmd, rc, secs, problems, err)
        if not problems:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            keep = os.path.join(a.work, "failed-%d" % plan["seed"])
            shutil.rmtree(keep, ignore_errors=True)
            os.rename(wd, keep)

    def ctd_cleanup(self, ns):
        ctr = [self.a.ctr, "--address", self.a.ctd_sock, "-n", ns]
        r = subprocess.run(ctr + ["images", "ls", "-q"], capture_output=True, text=True)
        names = r.stdout.split()
        if names:
            subprocess.run(ctr + ["images", "rm", "--sync"] + names, capture_output=True)

    def report(self, plan, cmd, rc, secs, problems, err):
        a = self.a
        p = sys.stdout
        p.write("FAILURE seed=%d mode=%s exit=%d after %.1fs%s\n" % (
            plan["seed"], plan["mode"], rc, secs,
            " (after a first run killed at %.2fs)" % plan["kill_first"] if plan.get("kill_first") else ""))
        for pr in problems:
            p.write("  problem: %s\n" % pr)
        p.write("  plan: %s\n" % json.dumps(plan))
        p.write("  command: %s\n" % " ".join(ascii(c)[1:-1] for c in cmd))
        p.write("  replay: HOSTILE_SEEDS=%d bash tests/integration/test_hostile_fuzz.sh\n" % plan["seed"])
        p.write("  requests under this seed (n method path status mutations):\n")
        try:
            with open(a.log) as f:
                for line in f:
                    if '"seed": %d,' % plan["seed"] not in line:
                        continue
                    r = json.loads(line)
                    if r.get("seed") != plan["seed"]:
                        continue
                    p.write("    #%d %s %s%s -> %s %s\n" % (r["n"], r["m"], r["path"][:120],
                                                          " [%s]" % r["range"] if r["range"] else "",
                                                          r["status"], "; ".join(r["mut"])[:400] or "-"))
        except OSError as e:
            p.write("    (no server log: %s)\n" % e)
        tail = err.decode("utf-8", "backslashreplace").splitlines()[-25:]
        p.write("  stderr (last %d lines):\n" % len(tail))
        for ln in tail:
            p.write("    %s\n" % ascii(ln)[1:-1][:400])
        p.flush()

    def bad_args_runs(self, port):
        plan = self.ctl("/_plan?port=%d&seed=-1" % port)
        plan = dict(plan, mode="oci-text")
        for args in BAD_ARGS:
            self.run(0, port, plan, bad_args=args)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepull", required=True)
    ap.add_argument("--sandbox", required=True, help="hostile_sandbox.sh")
    ap.add_argument("--ready", required=True, help="the server's ready file")
    ap.add_argument("--log", required=True, help="the server's request log")
    ap.add_argument("--work", required=True, help="scratch dir for state dirs and stores")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--min-requests", type=int, default=0,
                    help="after --seconds, go on until the server has answered this many requests")
    ap.add_argument("--max-seconds", type=float, default=0, help="... but stop after this long in all")
    ap.add_argument("--seed-base", type=int, default=1)
    ap.add_argument("--seeds", help="comma-separated seeds to run (instead of --seconds)")
    ap.add_argument("--deadline", default="4s")
    ap.add_argument("--stall", default="1s")
    ap.add_argument("--bound", type=int, default=15, help="timeout for one prepull run, seconds")
    ap.add_argument("--ctd-sock", default="")
    ap.add_argument("--ctd-root", default="")
    ap.add_argument("--ctr", default="ctr")
    ap.add_argument("--sanitizer-exit", type=int, default=86)
    ap.add_argument("--bad-args", action="store_true", help="also run the deliberately bad arguments once")
    a = ap.parse_args()
    with open(a.ready) as f:
        info = json.load(f)
    a.control = info["control"]
    fz = Fuzz(a)
    t0 = time.monotonic()
    req0 = fz.req0 = fz.ctl("/_stats")["requests"]
    if a.bad_args:
        fz.bad_args_runs(info["fuzz"][0])
    ths = [threading.Thread(target=fz.worker, args=(w, p)) for w, p in enumerate(info["fuzz"])]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    secs = time.monotonic() - t0
    stats = fz.ctl("/_stats")
    req = stats["requests"] - req0
    print("what the runs said (first error or warning, numbers masked; runs):")
    for shape, n in sorted(fz.shapes.items(), key=lambda kv: -kv[1])[:30]:
        print("  %5d  %s" % (n, ascii(shape)[1:-1]))
    print(json.dumps({"runs": fz.runs, "bad_args_runs": len(BAD_ARGS) if a.bad_args else 0, "requests": req, "injected": stats["injected"], "seconds": round(secs, 1),
                      "exit_codes": {str(k): v for k, v in sorted(fz.rcs.items())}, "modes": fz.modes,
                      "max_run_seconds": round(fz.max_secs, 1), "failures": len(fz.failures),
                      "failed_seeds": fz.failures[:50], "seed_base": a.seed_base}))


if __name__ == "__main__":
    main()
