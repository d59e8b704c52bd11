#!/usr/bin/env bash
# Hostile text from a registry: headers and error bodies with bytes that are not UTF-8,
# terminal escape sequences (ESC, C1 CSI), line breaks and bidi controls. The fault server
# (tests/integration/faultserver.py, canned routes) answers them in front of a real
# registry: a 401 whose WWW-Authenticate is `Bearer \xe9\x1b[31m` (once a crash of --json,
# exit 139), a bearer realm with such bytes, error bodies (JSON and not), a Content-Type,
# a redirect Location, and a blob answering 403 with such a body.
# For each, with --json and without, and with -v (the redirect, retried for seconds,
# with --json only): exit 1 (never a signal), every stdout
# line a JSON event (an error and a summary event among them: no event lost), and stderr
# valid UTF-8 without ESC or any other control character but the line ends.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:none:256K:7
push_layout "$T/src" v1 "$REG_ADDR/test/base:v1"
LAYER=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
start_faultserver

# Canned routes, one repository per case.  JSON strings go out as Latin-1, one byte per
# code point below 256, so "\u00e9" is the single byte 0xe9 and "\u009b" the byte 0x9b.
"$PY" - "$FS_PORT" "$LAYER" "$T/canned.json" <<'PYEOF'
import base64, json, sys
port, layer, out = sys.argv[1:4]
BAD = "\u00e9\u001b[31m\u00ff\u009b2J\u001b]0;owned\u0007"
def b64(b): return base64.b64encode(b).decode()
M = "/v2/hostile/%s/manifests/v1"
routes = {
    M % "challenge": {"status": 401, "headers": {"WWW-Authenticate": "Bearer \u00e9\u001b[31m"},
                      "body": "{}"},
    M % "realm": {"status": 401, "headers": {"WWW-Authenticate":
                  'Bearer realm="http://127.0.0.1:%s/_nope%s",service="s%s"' % (port, BAD, BAD)},
                  "body": "{}"},
    # No ASCII control byte: the challenge parses, and the realm is quoted later.
    M % "realm8": {"status": 401, "headers": {"WWW-Authenticate":
                   'Bearer realm="http://127.0.0.1:%s/_nope\u00e9\u00ff\u009b31m",service="s\u00e9"' % port},
                   "body": "{}"},
    M % "jsonbody": {"status": 404, "content_type": "application/json",
                     "body_b64": b64(b'{"errors":[{"code":"MANIFEST_UNKNOWN\xe9","message":'
                                     b'"\x1b[31mgone\xff\xe2\x80\xae\\u001b[2J"}]}')},
    M % "textbody": {"status": 403, "content_type": "text/plain",
                     "body_b64": b64(b"\x1b[2J\x1b[H\xc3\x28 broken\r\nline two \xe2\x80\xa8")},
    M % "ctype": {"status": 200, "content_type": "application/x\u00e9\u001b[31m",
                  "body": "{}", "digest_header": True},
    M % "location": {"status": 307, "headers": {"Location":
                     "http://127.0.0.1:%s/v2/x\u00ff\u001b[31m/manifests/v1" % port}, "body": ""},
    "/v2/test/base/blobs/" + layer: {"status": 403, "content_type": "application/json",
                     "headers": {"X-Hostile": BAD},
                     "body_b64": b64(b'{"errors":[{"code":"DENIED","message":"\x1b[31mno\xff"}]}')},
}
json.dump({"routes": routes}, open(out, "w"))
PYEOF
curl -sf -X POST --data-binary "@$T/canned.json" "$FS_URL/_canned" >/dev/null || fail "cannot load canned routes"

# check_output WHAT STDOUT_FILE STDERR_FILE JSON(0|1): the bytes, not bash's view of them
check_output() {
  local what=$1 out=$2 err=$3 json=$4 bad
  bad=$("$PY" - "$out" "$err" "$json" <<'PYEOF'
import json, sys, unicodedata
out, err, want_json = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), sys.argv[3] == "1"
problems = []
def printable(name, data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append("%s is not valid UTF-8: %s" % (name, e))
        return
    for ch in text:
        if ch != "\n" and (unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"):
            problems.append("%s has U+%04X" % (name, ord(ch)))
            return
printable("stderr", err)
printable("stdout", out)
events = []
for i, line in enumerate(out.split(b"\n"), 1):
    if not line:
        continue
    try:
        o = json.loads(line.decode("utf-8"))
        assert isinstance(o, dict) and "event" in o
        events.append(o["event"])
    except Exception as e:
        problems.append("stdout line %d is not a JSON event: %r" % (i, line[:200]))
if want_json:
    for ev in ("error", "summary"):
        if ev not in events:
            problems.append("no %s event (events: %s)" % (ev, events))
elif out.strip():
    problems.append("stdout is not empty without --json: %r" % out[:200])
print("; ".join(problems))
PYEOF
)
  [ -z "$bad" ] || fail "$what: $bad"
  ok "$what: stdout JSON events only, stderr printable UTF-8, no event lost"
}

for case in challenge realm realm8 jsonbody textbody ctype location blob; do
  ref=$FS_ADDR/hostile/$case:v1
  [ "$case" = blob ] && ref=$FS_ADDR/test/base:v1
  modes="json text verbose"
  # A redirect that cannot be followed is retried for seconds: one mode is enough.
  [ "$case" = location ] && modes=json
  for mode in $modes; do
    args=(pull --store "oci:$T/oci-$case-$mode" --state-dir "$T/state-$case-$mode" --chunk-size 64K)
    case $mode in json) args+=(--json) ;; verbose) args+=(--json -v) ;; esac
    PREPULL_TIMEOUT=60 run_prepull "${args[@]}" "$ref"
    assert_eq 1 "$RC" "$case, $mode: exit 1 (not a crash)"
    check_output "$case, $mode" "$T/run.$RUN_N.out" "$T/run.$RUN_N.err" "$([ $mode = text ] && echo 0 || echo 1)"
    assert_contains "$(grep -i 'error' "$T/run.$RUN_N.err")" "hostile/$case|test/base" "$case, $mode: the error names the image"
  done
done

# The crash case says what the server sent, visibly escaped.
run_prepull pull --json --store "oci:$T/oci-c" --state-dir "$T/state-c" "$FS_ADDR/hostile/challenge:v1"
assert_contains "$ERR" 'Bearer \\xe9' "the bad byte is shown as an escape on stderr"
assert_contains "$(json_events "$OUT" error)" 'Bearer \\\\xe9' "and in the JSON error event"
