# shellcheck shell=bash
# Shared harness for prepull's integration tests. Every tests/integration/test_*.sh
# sources this file. It gives each test a private temp dir, starts real servers
# (distribution registry, nginx, our token server) on 127.0.0.1 only, records their
# PIDs and kills exactly those PIDs on exit, and offers assertion helpers.
#
# Environment:
#   PREPULL      path of the binary under test (ctest sets it; default build/prepull)
#   PREPULL_SRC  source tree (ctest sets it; default: the repo root)
#   KEEP_TMP=1   keep the test's temp dir after the run (for debugging)
set -euo pipefail

IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${PREPULL_SRC:=$(cd "$IT_DIR/../.." && pwd)}"
: "${PREPULL:=$PREPULL_SRC/build/prepull}"
export PREPULL PREPULL_SRC
PY=${PYTHON:-python3}
TEST_NAME=$(basename "${0%.sh}")

T=$(mktemp -d "${TMPDIR:-/tmp}/prepull-${TEST_NAME}.XXXXXX")
# nginx workers run as the user given in the config; we run them as root when we
# are root (see _nginx_user) so the temp dir may stay private.
chmod 700 "$T"
# Never read the invoking user's docker credentials.
export DOCKER_CONFIG="$T/docker-empty"
mkdir -p "$DOCKER_CONFIG"
# Keep prepull's default state dir inside the temp dir too.
export XDG_CACHE_HOME="$T/xdg-cache"
# A test and the helpers it runs start Python hundreds of times, so: Debian's own
# /usr/bin/python3 when PYTHON is unset (the test set installs it; it starts in half the
# time of an interpreter built by hand with more on its path), else the interpreter
# behind PY itself, not a version manager's wrapper (a pyenv shim costs about half a
# second of CPU per call).  PY and every `python3` found on PATH from here on are it.
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then
  _py=/usr/bin/python3
else
  _py=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null) || _py=""
fi
if [ -n "$_py" ] && [ -x "$_py" ]; then
  PY=$_py
  mkdir -p "$T/python"
  ln -s "$_py" "$T/python/python3"
  export PATH="$T/python:$PATH"
fi
unset _py

# Sanitizer builds: a report must not hide behind an expected failure.  ASan, LSan
# and UBSan exit 1 by default, the code many tests expect from prepull; give them
# their own code and look for their reports in every captured stderr (see
# check_sanitizer).  Later options win, so a caller's own exitcode is overridden.
SANITIZER_EXIT=86
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=$SANITIZER_EXIT"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=$SANITIZER_EXIT:print_stacktrace=1"
SANITIZER_RX='ERROR: (AddressSanitizer|LeakSanitizer)|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)|: runtime error: '

PIDS=()
CHECKS=0
FAILED=0

_cleanup() {
  local rc=$?
  local pid
  set +e
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    # Give each one a moment, then insist.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Output a test captured itself (not through run_prepull) is checked here.
  local san
  san=$(_sanitizer_files)
  if [ -n "$san" ]; then
    echo "not ok - sanitizer report in: $san" >&2
    grep -hE -A 12 -- "$SANITIZER_RX" $san 2>/dev/null | head -n 60 >&2
    FAILED=$((FAILED + 1))
    [ "$rc" -ne 0 ] || rc=1
  fi
  if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
    echo "FAIL: $TEST_NAME ($CHECKS checks, rc=$rc); temp dir: $T" >&2
    _dump_logs >&2
  else
    echo "PASS: $TEST_NAME ($CHECKS checks)"
  fi
  if [ "${KEEP_TMP:-0}" != 1 ] && { [ "$rc" -eq 0 ] && [ "$FAILED" -eq 0 ] || [ "${KEEP_TMP:-0}" = 0 ]; }; then
    rm -rf "$T"
  fi
  exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

_dump_logs() {
  local f
  for f in "$T"/logs/*; do
    [ -s "$f" ] || continue
    echo "---- tail of $f"
    tail -n 8 "$f" | cut -c1-400
  done
}
mkdir -p "$T/logs"

# ---------------------------------------------------------------- output / checks

log() { echo "# $*"; }

ok() {
  CHECKS=$((CHECKS + 1))
  echo "ok $CHECKS - $*"
}

fail() {
  CHECKS=$((CHECKS + 1))
  FAILED=$((FAILED + 1))
  echo "not ok $CHECKS - $*" >&2
  exit 1
}

# The test cannot run here: a daemon, a tool or a privilege it needs is missing.  That
# fails the test: the test command installs what the tests need, and a missing part must
# not pass as green.
cannot_run() {
  echo "FAIL: $TEST_NAME cannot run here: $*"
  exit 1
}

# Skip the whole test when it does not apply here (another architecture, a daemon
# version the test is not about); ctest counts it as passed, the message says why.
skip_all() {
  echo "SKIP: $TEST_NAME: $*"
  exit 0
}

assert_eq() { # EXPECTED ACTUAL WHAT
  if [ "$1" == "$2" ]; then ok "$3"; else fail "$3: expected [$1], got [$2]"; fi
}

assert_ne() { # UNEXPECTED ACTUAL WHAT
  if [ "$1" != "$2" ]; then ok "$3"; else fail "$3: got [$2], which it must not be"; fi
}

assert_contains() { # HAYSTACK NEEDLE WHAT  (case-insensitive, extended regex)
  # A here-string, not a pipe: with pipefail, grep -q quitting early can
  # make the printf die of SIGPIPE and the match count as a failure.
  if grep -Eqi -- "$2" <<<"$1"; then
    ok "$3"
  else
    fail "$3: /$2/ not found in: $(printf '%s' "$1" | head -c 2000)"
  fi
}

assert_has() { # HAYSTACK NEEDLE WHAT  (fixed string, case-sensitive)
  if grep -Fq -- "$2" <<<"$1"; then
    ok "$3"
  else
    fail "$3: [$2] not found in: $(printf '%s' "$1" | head -c 2000)"
  fi
}

assert_not_contains() { # HAYSTACK NEEDLE WHAT  (fixed string)
  if grep -Fq -- "$2" <<<"$1"; then
    fail "$3: [$2] found in: $(printf '%s' "$1" | head -c 2000)"
  else
    ok "$3"
  fi
}

assert_num() { # A OP B WHAT   with OP one of -eq -ne -lt -le -gt -ge
  if [ "$1" "$2" "$3" ]; then ok "$4 ($1 $2 $3)"; else fail "$4: expected $1 $2 $3"; fi
}

assert_file() { # PATH WHAT
  if [ -e "$1" ]; then ok "$2"; else fail "$2: $1 does not exist"; fi
}

# ---------------------------------------------------------------- sanitizer reports

# _sanitizer_files -> the captured outputs under $T (*.err, *.out; not blobs, not the
# daemons' logs) that hold a sanitizer report, space separated.
_sanitizer_files() {
  find "$T" -maxdepth 3 -type f \( -name '*.err' -o -name '*.out' \) \
    -size -16M -print0 2>/dev/null | xargs -0 -r grep -lE -- "$SANITIZER_RX" 2>/dev/null | tr '\n' ' '
}

# check_sanitizer RC STDERR_FILE — fail when a run ended with the sanitizers' exit
# code or its stderr holds a sanitizer report, whatever the test expected of it.
check_sanitizer() {
  if [ "$1" -eq "$SANITIZER_EXIT" ] || grep -qE -- "$SANITIZER_RX" "$2" 2>/dev/null; then
    grep -E -A 12 -- "$SANITIZER_RX" "$2" | head -n 60 >&2
    fail "sanitizer report (exit $1) from prepull; stderr: $2"
  fi
}

# ---------------------------------------------------------------- running prepull

need_prepull() {
  [ -x "$PREPULL" ] || fail "prepull binary not found at $PREPULL (set PREPULL=...)"
}

# run_prepull ARGS...  -> sets RC, OUT (stdout), ERR (stderr); never exits.
# Files: $T/run.N.out / .err. A run that hangs is killed after PREPULL_TIMEOUT s.
RUN_N=0
run_prepull() {
  RUN_N=$((RUN_N + 1))
  local o="$T/run.$RUN_N.out" e="$T/run.$RUN_N.err"
  log "prepull $*"
  set +e
  timeout -k 5 "${PREPULL_TIMEOUT:-120}" "$PREPULL" "$@" >"$o" 2>"$e" </dev/null
  RC=$?
  set -e
  OUT=$(cat "$o")
  ERR=$(cat "$e")
  check_sanitizer "$RC" "$e"
  if [ "${VERBOSE:-0}" = 1 ] || [ "$RC" -ne 0 ]; then
    head -n 40 "$o" | sed 's/^/#   stdout: /'
    head -n 40 "$e" | sed 's/^/#   stderr: /'
  fi
  log "exit $RC"
}

# Expect success; on failure show the output and stop.
prepull_ok() { # WHAT ARGS...
  local what=$1
  shift
  run_prepull "$@"
  if [ "$RC" -eq 0 ]; then ok "$what"; else fail "$what: exit $RC; stderr: $ERR"; fi
}

# assert_served_once SENT SIZE OUT WHAT — the bytes servers sent for a blob (SENT, from
# their logs) against its SIZE, given prepull's --json output (OUT). With nothing raced
# or retired (its "lanes" event) each byte came once: SENT = SIZE, up to SIZE/100 when
# the caller passes SLACK=1. A lane that turned measurably slow (a CPU-starved server in
# a loaded test run) is raced or retired by design, and issue 13 allows that 10% more:
# then SIZE <= SENT <= 1.1 x SIZE. Sets RACED and RETIRED.
assert_served_once() {
  local sent=$1 size=$2 out=$3 what=$4 lanes
  lanes=$(json_events "$out" lanes | tail -n 1)
  [ -n "$lanes" ] || fail "$what: prepull --json printed no lanes event"
  read -r RACED RETIRED < <("$PY" -c 'import json, sys; o = json.loads(sys.argv[1]); print(o["raced"], o["retired"])' "$lanes")
  log "prepull: $lanes"
  assert_num "$sent" -ge "$size" "$what: the servers sent the whole blob ($sent bytes)"
  if [ "$RACED" = 0 ] && [ "$RETIRED" = 0 ]; then
    assert_num "$sent" -le $((size + ${SLACK:-0} * size / 100)) "$what: each byte came once"
  else
    assert_num "$sent" -le $((size + size / 10)) \
      "$what: with $RACED raced and $RETIRED retired, at most 1.1 x the blob"
  fi
}

# Query JSON lines (prepull --json output) with a Python expression.
# json_events TEXT EVENT -> the matching lines, one per line.
json_events() {
  printf '%s\n' "$1" | "$PY" -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    line = line.strip()
    if not line or not line.startswith("{"):
        continue
    try:
        o = json.loads(line)
    except ValueError:
        continue
    if o.get("event") == want:
        print(json.dumps(o, sort_keys=True))
' "$2"
}

# Every non-empty stdout line must be a JSON object.
assert_json_lines() { # TEXT WHAT
  local bad
  bad=$(printf '%s\n' "$1" | "$PY" -c '
import json, sys
for i, line in enumerate(sys.stdin, 1):
    if not line.strip():
        continue
    try:
        o = json.loads(line)
        assert isinstance(o, dict) and "event" in o
    except Exception:
        print("line %d: %s" % (i, line.strip()[:200]))
')
  if [ -z "$bad" ]; then ok "$2"; else fail "$2: not JSON event lines: $bad"; fi
}

# jq-like field access with Python: jget FILE_OR_- EXPR   (o is the parsed JSON)
# e.g. jget index.json 'len(o["manifests"])'
jget() {
  local src=$1
  shift
  if [ "$src" = - ]; then
    "$PY" -c 'import json,sys; o=json.load(sys.stdin); r=eval(sys.argv[1]); print(r if not isinstance(r,(dict,list)) else json.dumps(r, sort_keys=True))' "$1"
  else
    "$PY" -c 'import json,sys; o=json.load(open(sys.argv[2])); r=eval(sys.argv[1]); print(r if not isinstance(r,(dict,list)) else json.dumps(r, sort_keys=True))' "$1" "$src"
  fi
}

# ---------------------------------------------------------------- processes

# free_port -> a port nothing listens on now.  Tests run in parallel and a port is
# released before its server binds it, so it is picked at random below the kernel's
# ephemeral range (where bind(0) and every outgoing connection take theirs); the
# start_* helpers still start again on another port if theirs was taken meanwhile.
free_port() {
  "$PY" -c 'import random, socket
lo, hi = 10000, 32767
try:
    lo_eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    hi = min(hi, lo_eph - 1)
except (OSError, ValueError, IndexError):
    pass
for _ in range(200 if hi - lo >= 1000 else 0):
    p = random.randint(lo, hi)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_owned_by PORT PID — PID (or a process it started) listens on 127.0.0.1:PORT.
port_owned_by() {
  local p q
  for p in $(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    q=$p
    while [ -n "$q" ] && [ "$q" -gt 1 ]; do
      [ "$q" = "$2" ] && return 0
      q=$(ps -o ppid= -p "$q" 2>/dev/null | tr -d ' ' || true)
    done
  done
  return 1
}

# _url_port URL -> its port
_url_port() {
  local hp=${1#*://}
  hp=${hp%%/*}
  echo "${hp##*:}"
}

# _wait_ours URL PID — 0 when the URL answers and PID's process listens on its port;
# 1 when PID died (its port was taken: the caller may start again on another).
_wait_ours() {
  local url=$1 pid=$2 port i
  port=$(_url_port "$url")
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if curl -sk -o /dev/null --max-time 2 "$url" && port_owned_by "$port" "$pid"; then return 0; fi
    sleep 0.1
  done
  if curl -sk -o /dev/null --max-time 2 "$url"; then
    fail "$url answers, but not from the server this test started (pid $pid): the port is another's"
  fi
  fail "server at $url not ready after 10 s"
}

# A closed port for "dead registry" tests: bound then released, nothing listens.
dead_port() { free_port; }

# bg NAME CMD...  start a daemon in the background, log to $T/logs/NAME.log,
# record its PID. Sets LAST_PID.
bg() {
  local name=$1
  shift
  "$@" >>"$T/logs/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# wait_http URL [PID] — until the URL answers any HTTP status (curl exit 0); with
# PID, from that process (or one it started): another test's server on the same
# port does not count.
wait_http() {
  local url=$1 pid=${2:-} i
  if [ -n "$pid" ]; then
    _wait_ours "$url" "$pid" || fail "server for $url died at start-up"
    return 0
  fi
  for i in $(seq 1 100); do
    if curl -sk -o /dev/null --max-time 2 "$url"; then return 0; fi
    sleep 0.1
  done
  fail "server at $url not ready after 10 s"
}

# _started_again NAME PID — PID died at start-up: forget it; true while retries are
# left (3 tries in all).  Sets _TRIES.
_started_again() {
  _forget_pid "$2"
  wait "$2" 2>/dev/null || true
  _TRIES=$((${_TRIES:-0} + 1))
  if [ "$_TRIES" -lt 3 ]; then
    log "$1 died at start-up (its port taken?); starting it on another port"
    return 0
  fi
  return 1
}

wait_port() { # PORT
  local i
  for i in $(seq 1 100); do
    # bash's own /dev/tcp in a subshell: no program started per try.
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  fail "nothing listens on 127.0.0.1:$1 after 10 s"
}

# ---------------------------------------------------------------- registry

# start_registry [--htpasswd FILE] [--token REALM SERVICE ISSUER BUNDLE] [--name N]
# Starts the distribution registry on 127.0.0.1:<free port> with a private root.
# Sets REG_PORT, REG_ADDR (127.0.0.1:PORT), REG_ROOT (the storage root), REG_PID.
start_registry() {
  local htpasswd="" realm="" service="" issuer="" bundle="" name=registry
  while [ $# -gt 0 ]; do
    case $1 in
    --htpasswd) htpasswd=$2; shift 2 ;;
    --token) realm=$2 service=$3 issuer=$4 bundle=$5; shift 5 ;;
    --name) name=$2; shift 2 ;;
    *) fail "start_registry: unknown option $1" ;;
    esac
  done
  REG_ROOT=$T/$name
  mkdir -p "$REG_ROOT"
  local cfg=$T/$name.yml
  _TRIES=0
  while :; do
    REG_PORT=$(free_port)
    REG_ADDR=127.0.0.1:$REG_PORT
    {
      echo "version: 0.1"
      echo "log:"
      echo "  level: warn"
      echo "  accesslog:"
      echo "    disabled: true"
      echo "storage:"
      echo "  filesystem:"
      echo "    rootdirectory: $REG_ROOT"
      echo "  delete:"
      echo "    enabled: true"
      echo "  maintenance:"
      echo "    uploadpurging:"
      echo "      enabled: false"
      echo "http:"
      echo "  addr: $REG_ADDR"
      echo "  secret: prepull-test-secret"
      if [ -n "$htpasswd" ]; then
        echo "auth:"
        echo "  htpasswd:"
        echo "    realm: prepull-test"
        echo "    path: $htpasswd"
      elif [ -n "$realm" ]; then
        echo "auth:"
        echo "  token:"
        echo "    realm: $realm"
        echo "    service: $service"
        echo "    issuer: $issuer"
        echo "    rootcertbundle: $bundle"
      fi
    } >"$cfg"
    bg "$name" docker-registry serve "$cfg"
    REG_PID=$LAST_PID
    _wait_ours "http://$REG_ADDR/v2/" "$REG_PID" && break
    _started_again "registry $name" "$REG_PID" || fail "registry $name died at start-up: $(tail -n 3 "$T/logs/$name.log")"
  done
  log "registry $name on $REG_ADDR (pid $REG_PID)"
}

# make_htpasswd FILE USER PASSWORD  (bcrypt, as the registry requires)
make_htpasswd() {
  htpasswd -Bbn "$2" "$3" >"$1" 2>/dev/null
}

# write_docker_config DIR HOST USER PASSWORD  — a docker config.json with an auths entry.
write_docker_config() {
  mkdir -p "$1"
  "$PY" - "$1/config.json" "$2" "$3" "$4" <<'EOF'
import base64, json, sys
path, host, user, pw = sys.argv[1:5]
auth = base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
json.dump({"auths": {host: {"auth": auth}}}, open(path, "w"), indent=2)
EOF
}

# ---------------------------------------------------------------- token server

# start_token_server --public REPO [--user USER:PASS] [--expiry SECONDS]
# Generates a signing key + self-signed certificate (the registry's rootcertbundle),
# starts token_server.py. Sets TOK_PORT, TOK_REALM, TOK_SERVICE, TOK_ISSUER, TOK_BUNDLE.
start_token_server() {
  local d=$T/token
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout "$d/key.pem" -out "$d/cert.pem" -subj "/CN=prepull test token signer" \
    >/dev/null 2>&1 || fail "openssl: cannot make the token signing key"
  TOK_SERVICE="prepull-test-registry"
  TOK_ISSUER="prepull-test-token-issuer"
  TOK_BUNDLE=$d/cert.pem
  _TRIES=0
  while :; do
    TOK_PORT=$(free_port)
    TOK_REALM="http://127.0.0.1:$TOK_PORT/token"
    bg token "$PY" "$IT_DIR/token_server.py" --port "$TOK_PORT" --key "$d/key.pem" \
      --cert "$d/cert.pem" --issuer "$TOK_ISSUER" --service "$TOK_SERVICE" "$@"
    TOK_PID=$LAST_PID
    _wait_ours "http://127.0.0.1:$TOK_PORT/healthz" "$TOK_PID" && break
    _started_again "token server" "$TOK_PID" || fail "token server died at start-up: $(tail -n 3 "$T/logs/token.log")"
  done
  log "token server on 127.0.0.1:$TOK_PORT (pid $TOK_PID)"
}

# ---------------------------------------------------------------- images

# mkimage OUT_LAYOUT TAG ARGS...   -> runs mkimage.py, summary JSON in $T/img-<TAG>.json
mkimage() {
  local out=$1 tag=$2
  shift 2
  "$PY" "$IT_DIR/mkimage.py" --out "$out" --tag "$tag" "$@" >"$T/img-$tag.json" ||
    fail "mkimage.py $* failed"
}

# push_layout LAYOUT_DIR TAG REF [USER:PASS]
# Pushes oci:LAYOUT_DIR:TAG to docker://REF without recompression, then checks
# that the registry serves the top-level manifest with the same digest.
push_layout() {
  local dir=$1 tag=$2 ref=$3 creds=${4:-}
  local args=(copy --quiet --dest-tls-verify=false --preserve-digests)
  if [ -n "$creds" ]; then args+=(--dest-creds "$creds"); else args+=(--dest-no-creds); fi
  # An index (multi-arch) is copied with all its instances.
  if [ "$(_layout_ref_mediatype "$dir" "$tag")" = application/vnd.oci.image.index.v1+json ]; then
    args+=(--all)
  fi
  skopeo "${args[@]}" "oci:$dir:$tag" "docker://$ref" >"$T/logs/skopeo-push.log" 2>&1 ||
    fail "skopeo push of oci:$dir:$tag to $ref failed: $(tail -n 5 "$T/logs/skopeo-push.log")"
  local want got
  want=$(_layout_ref_digest "$dir" "$tag")
  got=$(registry_digest "$ref" "$creds")
  [ "$want" = "$got" ] || fail "push of $tag changed the manifest digest: layout $want, registry $got"
  log "pushed oci:$dir:$tag -> $ref ($want)"
}

_layout_ref_digest() {
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"]); break
EOF
}

_layout_ref_mediatype() {
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["mediaType"]); break
EOF
}

# registry_digest HOST:PORT/REPO:TAG [USER:PASS] -> Docker-Content-Digest of the tag
# (plain HTTP; handles Basic auth only — token registries are checked by skopeo).
registry_digest() {
  local ref=$1 creds=${2:-}
  local host=${ref%%/*} rest=${ref#*/}
  local repo=${rest%:*} tag=${rest##*:}
  local a=()
  [ -n "$creds" ] && a=(-u "$creds")
  if [ -n "$creds" ] && curl -s -o /dev/null -w '%{http_code}' "http://$host/v2/" | grep 401 >/dev/null &&
    curl -sI "http://$host/v2/" | grep -i 'www-authenticate: bearer' >/dev/null; then
    skopeo inspect --raw --tls-verify=false --creds "$creds" "docker://$ref" | sha256sum | sed 's/^/sha256:/; s/ .*//'
    return
  fi
  curl -sf "${a[@]}" -I \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' \
    "http://$host/v2/$repo/manifests/$tag" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'
}

# Digest a JSON summary written by mkimage: img_field TAG EXPR
img_field() {
  jget "$T/img-$1.json" "$2"
}

# ---------------------------------------------------------------- layout checks

# verify_layout DIR TAG [SKOPEO_INSPECT_OPTIONS...] — oci-layout present,
# `skopeo inspect [OPTIONS] oci:DIR:TAG` succeeds (oci:DIR when TAG is empty), and
# every file under blobs/sha256 hashes to its name.
verify_layout() {
  local dir=$1 tag=$2
  shift 2
  local ref="oci:$dir${tag:+:$tag}"
  [ -f "$dir/oci-layout" ] || fail "$dir/oci-layout missing"
  grep -q '"imageLayoutVersion"' "$dir/oci-layout" || fail "$dir/oci-layout has no imageLayoutVersion"
  "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$dir/index.json" ||
    fail "$dir/index.json is not JSON"
  if ! skopeo inspect "$@" "$ref" >"$T/logs/skopeo-inspect.log" 2>&1; then
    fail "skopeo inspect $* $ref failed: $(tail -n 3 "$T/logs/skopeo-inspect.log")"
  fi
  local bad
  bad=$(verify_blob_hashes "$dir")
  [ -z "$bad" ] || fail "blobs in $dir do not hash to their names: $bad"
  bad=$(layout_incomplete "$dir" "$tag")
  [ -z "$bad" ] || fail "layout $ref is not complete: $bad"
  ok "layout $ref passes skopeo inspect${*:+ $*}, has every blob its manifests name, and every blob hashes to its name"
}

# layout_incomplete DIR [TAG] -> prints what is missing (nothing when complete).
# From the index.json entry for TAG (every entry when TAG is empty): every
# descriptor's blob is present with the descriptor's size (its hash is checked by
# verify_blob_hashes).  Of an image index, the manifests that were pulled (present)
# must be complete and at least one must be there: prepull fetches one platform.
layout_incomplete() {
  "$PY" - "$1" "${2:-}" <<'EOF'
import json, os, sys
d, tag = sys.argv[1], sys.argv[2]
problems = []
def path(desc):
    alg, _, hx = desc.get("digest", "").partition(":")
    return os.path.join(d, "blobs", alg, hx)
def present(desc, what):
    p = path(desc)
    if not os.path.isfile(p):
        problems.append("%s %s missing" % (what, desc.get("digest")))
        return None
    if os.path.getsize(p) != desc.get("size"):
        problems.append("%s %s is %d bytes, descriptor says %s" % (
            what, desc.get("digest"), os.path.getsize(p), desc.get("size")))
    return p
def image(desc, what):
    p = present(desc, what)
    if not p:
        return
    o = json.load(open(p))
    if "manifests" in o:
        kids = [m for m in o["manifests"] if os.path.isfile(path(m))]
        if not kids:
            problems.append("index %s: none of its %d manifests is present" % (
                desc["digest"], len(o["manifests"])))
        for m in kids:
            image(m, "manifest")
        return
    if "config" not in o:
        problems.append("%s %s has no config" % (what, desc["digest"]))
        return
    present(o["config"], "config")
    for l in o.get("layers", []):
        present(l, "layer")
idx = json.load(open(os.path.join(d, "index.json")))
entries = [m for m in idx.get("manifests", [])
           if not tag or m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
if not entries:
    problems.append("no index.json entry" + (" for tag " + tag if tag else ""))
for m in entries:
    image(m, "top-level")
print("; ".join(problems))
EOF
}

# verify_blob_hashes DIR -> prints every bad file (nothing when all are good)
verify_blob_hashes() {
  local f dir=$1/blobs/sha256
  [ -d "$dir" ] || { echo "no $dir"; return; }
  for f in "$dir"/*; do
    [ -f "$f" ] || echo "not a file: $f"
  done
  # One sha256sum for every file (a process per blob took minutes for 600 blobs).
  (cd "$dir" && find . -maxdepth 1 -type f -printf '%f\0' | xargs -0r sha256sum --) |
    awk -v dir="$dir" '{ name = substr($0, 67); if ($1 != name) print dir "/" name " (is " $1 ")" }'
}

# index_entries DIR -> one line per index.json entry: "digest ref.name image.name mediaType"
index_entries() {
  "$PY" - "$1" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx.get("manifests", []):
    a = m.get("annotations", {})
    print(m.get("digest"), a.get("org.opencontainers.image.ref.name", "-"),
          a.get("io.containerd.image.name", "-"), m.get("mediaType", "-"))
EOF
}

# every blob of an image (recursively from the top-level digest) is in the layout?
layout_has_image() { # DIR DIGEST PLATFORM(os/arch or "") -> prints missing blobs
  "$PY" - "$@" <<'EOF'
import json, os, sys
d, top, plat = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
def p(dg): return os.path.join(d, "blobs", *dg.split(":"))
def need(dg):
    if not os.path.exists(p(dg)):
        print("missing", dg); return None
    return p(dg)
f = need(top)
if f:
    o = json.load(open(f))
    if "manifests" in o:
        want = plat.split("/") if plat else ["linux", "amd64"]
        sel = [m for m in o["manifests"] if m.get("platform", {}).get("os") == want[0]
               and m.get("platform", {}).get("architecture") == want[1]]
        o = None
        if sel and need(sel[0]["digest"]):
            o = json.load(open(p(sel[0]["digest"])))
    if o:
        need(o["config"]["digest"])
        for l in o.get("layers", []):
            need(l["digest"])
EOF
}

# ---------------------------------------------------------------- nginx

_nginx_user() {
  if [ "$(id -u)" = 0 ]; then echo "user root root;"; fi
}

_nginx_head() { # DIR
  local d=$1
  cat <<EOF
$(_nginx_user)
worker_processes 2;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 1024; }
http {
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 10000;
  client_max_body_size 0;
  map \$http_authorization \$pp_auth_present { "" 0; default 1; }
  # One line per request; whether Authorization was sent, never its value.
  log_format pp 'c=\$connection s=\$status m=\$request_method u=\$request_uri '
                'r=\$http_range b=\$body_bytes_sent a=\$pp_auth_present p=\$server_protocol';
EOF
}

_nginx_proxy_location() { # REGADDR LIMIT
  cat <<EOF
      proxy_pass http://$1;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_set_header Connection "";
      proxy_buffering on;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 300s;
      limit_rate $2;
EOF
}

# nginx_conf_proxy DIR PORT REGADDR LIMIT  -> writes DIR/nginx.conf
# (a) plain-HTTP front proxy with a per-connection limit_rate, log DIR/access.log
nginx_conf_proxy() {
  local d=$1 port=$2 reg=$3 limit=$4
  mkdir -p "$d/tmp"
  {
    _nginx_head "$d"
    cat <<EOF
  server {
    listen 127.0.0.1:$port;
    access_log $d/access.log pp;
    location / {
$(_nginx_proxy_location "$reg" "$limit")
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

# nginx_conf_redirect DIR PORT CDNPORT REGADDR REGROOT LIMIT
# (b) front proxy; blob GETs are answered by 307 to a "CDN" server block on CDNPORT
# that serves the registry's blob files by alias (Range works there). The redirect is
# only given after the registry accepted the request's credentials (auth_request to
# the registry's /v2/), as a real registry does; the 307 itself comes from a
# redirector location that is asked without the Authorization header.
# Logs: DIR/access.log (front), DIR/cdn.log (CDN files), DIR/redirector.log.
nginx_conf_redirect() {
  local d=$1 port=$2 cdn=$3 reg=$4 root=$5 limit=$6
  mkdir -p "$d/tmp"
  {
    _nginx_head "$d"
    cat <<EOF
  map \$request_method \$pp_blob_upstream {
    GET     http://127.0.0.1:$cdn/_redirect/sha256/\$pp_h2/\$pp_h2\$pp_rest/data;
    default http://$reg\$request_uri;
  }
  # The registry's credentials go to the registry only (HEAD etc.), never to the CDN.
  map \$request_method \$pp_fwd_auth { GET ""; default \$http_authorization; }
  server {
    listen 127.0.0.1:$port;
    access_log $d/access.log pp;
    location ~ "^/v2/(?<pp_repo>.+)/blobs/sha256:(?<pp_h2>[0-9a-f]{2})(?<pp_rest>[0-9a-f]{62})\$" {
      auth_request /_pp_auth;
      proxy_pass \$pp_blob_upstream;
      proxy_redirect off;
      proxy_set_header Authorization \$pp_fwd_auth;
      proxy_set_header Host \$http_host;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /_pp_auth {
      internal;
      proxy_pass http://$reg/v2/;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host \$http_host;
    }
    location / {
$(_nginx_proxy_location "$reg" "$limit")
    }
  }
  server {
    listen 127.0.0.1:$cdn;
    access_log $d/cdn.log pp;
    location /cdn/sha256/ {
      alias $root/docker/registry/v2/blobs/sha256/;
      limit_rate $limit;
    }
    location ~ "^/_redirect/(?<pp_path>.*)\$" {
      access_log $d/redirector.log pp;
      return 307 http://127.0.0.1:$cdn/cdn/\$pp_path;
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

# nginx_conf_tls DIR PORT BADPORT REGADDR LIMIT CERT KEY BADCERT BADKEY [LISTEN_IP]
# (c) TLS + HTTP/2 front proxy on PORT (certificate from the test CA) and the same
# on BADPORT with a certificate from a CA nobody trusts. LISTEN_IP: 127.0.0.1 unless
# given (another loopback address, when a host name maps to e.g. 127.0.1.1).
nginx_conf_tls() {
  local d=$1 port=$2 bad=$3 reg=$4 limit=$5 cert=$6 key=$7 bcert=$8 bkey=$9 ip=${10:-127.0.0.1}
  mkdir -p "$d/tmp"
  {
    _nginx_head "$d"
    cat <<EOF
  server {
    listen $ip:$port ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    access_log $d/access.log pp;
    location / {
$(_nginx_proxy_location "$reg" "$limit")
    }
  }
  server {
    listen $ip:$bad ssl http2;
    ssl_certificate $bcert;
    ssl_certificate_key $bkey;
    access_log $d/bad.log pp;
    location / {
$(_nginx_proxy_location "$reg" "$limit")
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

# start_nginx CONFFILE [PORT...] — nginx in the foreground (daemon off) in the
# background of this shell, PID recorded; waits until every PORT accepts connections.
start_nginx() {
  local conf=$1
  shift
  local d
  d=$(dirname "$conf")
  mkdir -p "$d/tmp"
  nginx -t -q -e "$d/error.log" -p "$d" -c "$conf" >"$T/logs/nginx-t.log" 2>&1 ||
    fail "nginx config $conf is invalid: $(cat "$T/logs/nginx-t.log")"
  bg nginx nginx -e "$d/error.log" -p "$d" -c "$conf"
  NGINX_PID=$LAST_PID
  local p
  for p in "$@"; do
    wait_port "$p"
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx died at start-up: $(tail -n 5 "$d/error.log")"
    wait_until 5 port_owned_by "$p" "$NGINX_PID" ||
      fail "127.0.0.1:$p answers, but not from the nginx this test started (pid $NGINX_PID)"
  done
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx died at start-up: $(tail -n 5 "$d/error.log")"
  log "nginx $conf (pid $NGINX_PID) on ports $*"
}

# make_ca DIR NAME [HOSTNAME] -> DIR/NAME-ca.pem, DIR/NAME-ca.key, and a server
# certificate for IP:127.0.0.1, DNS:localhost (and DNS:HOSTNAME) signed by it:
# DIR/NAME-server.pem, DIR/NAME-server.key
make_ca() {
  local d=$1 n=$2 extra=${3:+,DNS:$3}
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 2 \
    -keyout "$d/$n-ca.key" -out "$d/$n-ca.pem" -subj "/CN=prepull test CA $n" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    >/dev/null 2>&1 || fail "openssl: CA $n"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -keyout "$d/$n-server.key" -out "$d/$n-server.csr" -subj "/CN=127.0.0.1" \
    >/dev/null 2>&1 || fail "openssl: CSR $n"
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost$extra" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/$n-ext.cnf"
  openssl x509 -req -sha256 -days 2 -in "$d/$n-server.csr" -CA "$d/$n-ca.pem" -CAkey "$d/$n-ca.key" \
    -CAcreateserial -out "$d/$n-server.pem" -extfile "$d/$n-ext.cnf" >/dev/null 2>&1 ||
    fail "openssl: server certificate $n"
}

# log_stats LOGFILE [URI_REGEX] -> "bytes=N conns=N requests=N ranges=N auth=N status=..."
# for GET requests whose URI matches (default: registry blob GETs and /cdn/ files).
# bytes: sum of $body_bytes_sent; conns: distinct $connection values; ranges: requests
# with a Range header; distinct_ranges: distinct Range values; auth: requests that
# carried an Authorization header.
log_stats() {
  local f=$1 re=${2:-'/blobs/sha256:|^/cdn/'}
  "$PY" - "$f" "$re" <<'EOF'
import re, sys, os
f, rx = sys.argv[1], re.compile(sys.argv[2])
n = b = rg = au = 0
conns, ranges, status = set(), set(), {}
if os.path.exists(f):
    for line in open(f):
        kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
        if kv.get("m") != "GET" or not rx.search(kv.get("u", "")):
            continue
        n += 1
        b += int(kv.get("b", 0))
        conns.add(kv.get("c"))
        if kv.get("r", "-") != "-":
            rg += 1
            ranges.add((kv.get("u"), kv.get("r")))
        if kv.get("a") == "1":
            au += 1
        status[kv.get("s")] = status.get(kv.get("s"), 0) + 1
print("bytes=%d conns=%d requests=%d ranges=%d distinct_ranges=%d auth=%d status=%s" % (
    b, len(conns), n, rg, len(ranges), au,
    ",".join("%s:%d" % kv for kv in sorted(status.items())) or "-"))
EOF
}

# stat_field "STATS LINE" NAME -> value
stat_field() {
  printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# Truncate a log between phases of a test (nginx keeps its fd; truncation is fine).
reset_log() { : >"$1"; }

# Let nginx finish writing the last access-log lines (written at request end).
settle() { sleep "${1:-0.3}"; }

# ---------------------------------------------------------------- fault server, background runs
# (added for the fault, kill, disk and bad-input tests)

# start_faultserver [FAULTSERVER OPTIONS...] — tests/integration/faultserver.py on a free
# port, fronting the registry started by start_registry (REG_ADDR, REG_ROOT) when there
# is one. Sets FS_PORT, FS_ADDR, FS_URL, FS_LOG (JSON lines), FS_PID.
start_faultserver() {
  FS_LOG=$T/logs/faultserver.jsonl
  local up=()
  [ -n "${REG_ADDR:-}" ] && up=(--registry "$REG_ADDR" --storage "$REG_ROOT")
  _TRIES=0
  while :; do
    FS_PORT=$(free_port)
    FS_ADDR=127.0.0.1:$FS_PORT
    FS_URL=http://$FS_ADDR
    bg faultserver "$PY" "$IT_DIR/faultserver.py" --port "$FS_PORT" --log "$FS_LOG" "${up[@]}" "$@"
    FS_PID=$LAST_PID
    _wait_ours "$FS_URL/healthz" "$FS_PID" && break
    _started_again "fault server" "$FS_PID" || fail "fault server died at start-up: $(tail -n 3 "$T/logs/faultserver.log")"
  done
  log "fault server on $FS_ADDR (pid $FS_PID)"
}

# fs_rules JSON — replace the fault rules (see faultserver.py), e.g.
#   fs_rules '{"rules": [{"fault": "reset", "count": 2}]}'
fs_rules() {
  curl -sf -X POST --data-binary "$1" "$FS_URL/_fault" >"$T/logs/fs-rules.json" ||
    fail "fault server: cannot set rules $1"
}

# fs_canned JSON — add canned routes {"routes": {PATH: SPEC}}.
fs_canned() {
  curl -sf -X POST --data-binary "$1" "$FS_URL/_canned" >/dev/null ||
    fail "fault server: cannot add canned routes"
}

# fs_applied -> how many times each rule fired, space separated ("2 0 1")
fs_applied() {
  curl -sf "$FS_URL/_fault" | "$PY" -c 'import json,sys; print(" ".join(str(r["applied"]) for r in json.load(sys.stdin)["rules"]))'
}

# fs_live_bytes PATH_SUBSTRING -> body bytes sent so far (live, also mid-request)
fs_live_bytes() {
  curl -sf "$FS_URL/_stats" | "$PY" -c '
import json, sys
o = json.load(sys.stdin)
print(sum(v for k, v in o["bytes"].items() if sys.argv[1] in k))' "$1"
}

fs_tokens_issued() {
  curl -sf "$FS_URL/_stats" | jget - 'o["tokens_issued"]'
}

# fs_query EXPR [ARG...] — evaluate a Python expression over the fault server's log:
# L is the list of records (dicts), A the extra arguments. Prints the result.
#   fs_query 'sum(r["bytes"] for r in L if A[0] in r["path"])' "$DIGEST"
fs_query() {
  local expr=$1
  shift
  "$PY" - "$FS_LOG" "$expr" "$@" <<'PYEOF'
import json, sys
L = []
try:
    for line in open(sys.argv[1]):
        line = line.strip()
        if line:
            L.append(json.loads(line))
except FileNotFoundError:
    pass
A = sys.argv[3:]
r = eval(sys.argv[2])
print(r if not isinstance(r, (dict, list)) else json.dumps(r, sort_keys=True))
PYEOF
}

# fs_blob_bytes DIGEST -> body bytes served for GETs of that blob (log: finished requests)
fs_blob_bytes() {
  fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and r["path"].endswith(A[0]))' "$1"
}

# Truncate the fault server's log (it appends, line-buffered).
fs_reset_log() { : >"$FS_LOG"; }

# start_prepull_bg ARGS... — run prepull in the background (no timeout wrapper, so a
# signal reaches prepull itself). Sets PP_PID; output in $T/run.N.out/.err.
start_prepull_bg() {
  RUN_N=$((RUN_N + 1))
  PP_OUTF=$T/run.$RUN_N.out
  PP_ERRF=$T/run.$RUN_N.err
  log "prepull $* (background)"
  "$PREPULL" "$@" >"$PP_OUTF" 2>"$PP_ERRF" </dev/null &
  PP_PID=$!
  PIDS+=("$PP_PID")
}

# wait_prepull [TIMEOUT_S] — wait for the background prepull; sets RC, OUT, ERR.
# After TIMEOUT_S (default 120) it is killed and the test fails.
wait_prepull() {
  local lim=${1:-120} i=0
  while kill -0 "$PP_PID" 2>/dev/null; do
    # a zombie still answers kill -0; wait reaps it below
    if [ "$(ps -o stat= -p "$PP_PID" 2>/dev/null | cut -c1)" = Z ]; then break; fi
    sleep 0.1
    i=$((i + 1))
    if [ "$i" -ge $((lim * 10)) ]; then
      kill -9 "$PP_PID" 2>/dev/null
      wait "$PP_PID" 2>/dev/null || true
      fail "prepull (pid $PP_PID) still running after ${lim}s; stderr: $(tail -n 5 "$PP_ERRF")"
    fi
  done
  set +e
  wait "$PP_PID"
  RC=$?
  set -e
  _forget_pid "$PP_PID"
  OUT=$(cat "$PP_OUTF")
  ERR=$(cat "$PP_ERRF")
  check_sanitizer "$RC" "$PP_ERRF"
  if [ "${VERBOSE:-0}" = 1 ] || [ "$RC" -ne 0 ]; then
    head -n 40 "$PP_OUTF" | sed 's/^/#   stdout: /'
    head -n 40 "$PP_ERRF" | sed 's/^/#   stderr: /'
  fi
  log "exit $RC"
}

# _forget_pid PID — a reaped child leaves PIDS (its number may be reused later).
_forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# kill_prepull SIGNAL — signal the background prepull and reap it (sets RC, OUT, ERR).
kill_prepull() {
  kill -s "$1" "$PP_PID" 2>/dev/null || true
  wait_prepull 30
}

# wait_until TIMEOUT_S CMD... — poll CMD every 0.05 s until it succeeds; 1 on timeout.
wait_until() {
  local lim=$1 i=0
  shift
  while ! "$@"; do
    sleep 0.05
    i=$((i + 1))
    [ "$i" -lt $((lim * 20)) ] || return 1
  done
}

# mount_tmpfs DIR SIZE — a private tmpfs at DIR (created), unmounted when the test ends.
mount_tmpfs() {
  [ "$(id -u)" = 0 ] || cannot_run "needs root to mount a tmpfs"
  mkdir -p "$1"
  mount -t tmpfs -o "size=$2" "prepull-$TEST_NAME" "$1" 2>"$T/logs/mount.log" ||
    cannot_run "cannot mount a tmpfs: $(cat "$T/logs/mount.log")"
  add_exit_hook "umount '$1' 2>/dev/null || umount -l '$1'"
  ok "$2 tmpfs mounted at $1"
}

# assert_store_clean DIR WHAT — every file in DIR/blobs/sha256 hashes to its name
# (an absent or empty blobs dir is clean).
assert_store_clean() {
  local bad=""
  if [ -d "$1/blobs/sha256" ] && [ -n "$(ls -A "$1/blobs/sha256")" ]; then
    bad=$(verify_blob_hashes "$1")
  fi
  [ -z "$bad" ] || fail "$2: blobs that do not hash to their names: $bad"
  ok "$2: every blob in the store hashes to its name"
}

# assert_no_index_entry DIR WHAT — index.json absent or without entries
assert_no_index_entry() {
  local e=""
  [ -f "$1/index.json" ] && e=$(index_entries "$1")
  assert_eq "" "$e" "$2: no index.json entry"
}

# blob_count DIR -> number of files in DIR/blobs/sha256 (0 when absent)
blob_count() {
  if [ -d "$1/blobs/sha256" ]; then find "$1/blobs/sha256" -maxdepth 1 -type f | wc -l; else echo 0; fi
}

# elapsed_since START (from date +%s.%N) -> seconds with 2 decimals
elapsed_since() {
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}

# add_exit_hook CMD — run CMD (a shell string) on exit, before the harness cleans up
# (e.g. unmount a tmpfs inside $T). Hooks run in order; their failures are ignored.
EXIT_HOOKS=()
_run_exit_hooks() {
  local h
  for h in "${EXIT_HOOKS[@]}"; do eval "$h" || true; done
}
add_exit_hook() {
  EXIT_HOOKS+=("$1")
  trap '_pp_rc=$?; set +e; _run_exit_hooks; (exit $_pp_rc); _cleanup' EXIT
}

# prepull_for_nobody — a copy of $PREPULL that uid nobody can run (the build dir may
# sit under a private home), for permission checks: run it with
#   runuser -u nobody -- "$NOBODY_PREPULL" ...
# Sets NOBODY_PREPULL.  A check that cannot run as nobody fails; it is never skipped.
prepull_for_nobody() {
  [ "$(id -u)" = 0 ] || cannot_run "running prepull as nobody needs root"
  command -v runuser >/dev/null || cannot_run "runuser (util-linux) is needed"
  local d
  d=$(mktemp -d /tmp/prepull-nobody.XXXXXX)
  add_exit_hook "rm -rf '$d'"
  chmod 755 "$d"
  cp "$PREPULL" "$d/prepull"
  chmod 755 "$d/prepull"
  runuser -u nobody -- "$d/prepull" --version >"$T/logs/nobody-version.log" 2>&1 ||
    cannot_run "uid nobody cannot run $d/prepull: $(tail -n 3 "$T/logs/nobody-version.log")"
  NOBODY_PREPULL=$d/prepull
}

