#!/usr/bin/env bash
# The hostile-registry fuzzer: prepull against tests/integration/hostile_registry.py, a
# registry that serves a real image (busybox and two small layers, single-platform and
# multi-arch, made by mkimage.py) and answers each request with a seeded mutation of the
# valid answer, or leaves it alone (status codes, headers, challenges, token bodies,
# manifests and indexes, Content-Range, Location, bodies cut or too long, connections
# closed, slow drips).  tests/integration/hostile_fuzz.py runs prepull again and again
# (--json or text, the OCI store or a private containerd; a quarter of the runs start
# from the state a first run killed part-way left), each run in a private mount
# namespace where all but its state dir and store is read-only, and checks every run: no
# crash and no sanitizer report, exit 0, 1 or 3, no hang past a bound, stderr and stdout
# printable UTF-8, JSON lines that parse (with a summary event), and no blob in any store
# that does not hash to its name.
#
# Environment:
#   HOSTILE_SECONDS=60      how long to fuzz at least (the soak: HOSTILE_SECONDS=3600)
#   HOSTILE_MIN_REQUESTS    requests the server must have answered (default 2000 per 60 s);
#                           on a loaded machine (the test command runs three tests at once)
#                           fuzzing goes on past HOSTILE_SECONDS until it has, up to 3x as
#                           long, so the floor counts work done, not speed
#   HOSTILE_JOBS=5          prepull runs at once
#   HOSTILE_SEED=N          first seed (default: the time); run i uses N+i
#   HOSTILE_SEEDS=S1,S2     replay exactly these seeds (a failure prints its seed)
source "$(dirname "$0")/lib.sh"
source "$IT_DIR/containerd.sh"
need_prepull

SECS=${HOSTILE_SECONDS:-60}
MIN_REQ=${HOSTILE_MIN_REQUESTS:-$((SECS * 2000 / 60))}
JOBS=${HOSTILE_JOBS:-5}
SEED=${HOSTILE_SEED:-$(date +%s)}
SEEDS=${HOSTILE_SEEDS:-}
# A sanitizer build's reports get their own exit code: lib.sh's SANITIZER_EXIT when it
# sets one, else the same 86 here; hostile_fuzz.py also looks for their text on stderr.
if [ -z "${SANITIZER_EXIT:-}" ]; then
  SANITIZER_EXIT=86
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=$SANITIZER_EXIT"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=$SANITIZER_EXIT:print_stacktrace=1"
fi
command -v unshare >/dev/null || cannot_run "unshare (util-linux) is needed"
log "seconds $SECS, at least $MIN_REQ requests, $JOBS at once, first seed $SEED${SEEDS:+, seeds $SEEDS}"

# ---- the read-only mount namespace works here, or the test cannot say what it claims
SANDBOX=$IT_DIR/hostile_sandbox.sh
mkdir -p "$T/probe/rw" "$T/probe/ro"
probe_out=$(bash "$SANDBOX" "$T/probe/rw" -- sh -c '
  touch "$1/rw/in" || echo "cannot write the rw dir"
  for p in "$1/ro/out" "$1/out" /tmp/prepull-hostile-probe.$$ /var/tmp/prepull-hostile-probe.$$ /dev/shm/prepull-hostile-probe.$$; do
    if touch "$p" 2>/dev/null; then echo "wrote $p"; rm -f "$p"; fi
  done
  echo x >/dev/null || echo "cannot write /dev/null"' probe "$T/probe" 2>&1) ||
  cannot_run "the private read-only mount namespace (unshare -m, mount --bind -o ro) does not work here: $probe_out"
[ -z "$probe_out" ] || cannot_run "the read-only mount namespace leaks: $probe_out"
[ -e "$T/probe/rw/in" ] || cannot_run "the writable bind in the mount namespace did not write"
[ ! -e "$T/probe/ro/out" ] && [ ! -e "$T/probe/out" ] || fail "the read-only namespace let a write through"
ok "in the private mount namespace only the given dir is writable (/, /tmp, /var/tmp, /dev/shm refused)"

# ---- the image: real blobs and manifests, the valid answers the server mutates
mkimage "$T/img" v1 --layer busybox:gzip --layer random:none:2M:3 --layer file:gzip:/etc/fuzz=hello
mkimage "$T/img" multi --multiarch --layer busybox:gzip
ok "image built: $(jget "$T/img-v1.json" 'o["bytes"]') bytes (v1), multi-arch index (multi)"

start_containerd

REQLOG=$T/logs/hostile-requests.jsonl
bg hostile "$PY" "$IT_DIR/hostile_registry.py" --layout "$T/img" --ports "$JOBS" \
  --ready "$T/hostile.ready" --log "$REQLOG"
HOSTILE_PID=$LAST_PID
wait_until 10 test -s "$T/hostile.ready" || fail "hostile_registry.py did not start: $(tail -n 5 "$T/logs/hostile.log")"
kill -0 "$HOSTILE_PID" || fail "hostile_registry.py died at start-up"
log "hostile registry: $(cat "$T/hostile.ready")"

seed_args=(--seed-base "$SEED" --seconds "$SECS" --min-requests "$MIN_REQ" --max-seconds $((SECS * 3)))
[ -n "$SEEDS" ] && seed_args=(--seeds "$SEEDS" --seed-base "$SEED")
set +e
"$PY" "$IT_DIR/hostile_fuzz.py" --prepull "$PREPULL" --sandbox "$SANDBOX" --ready "$T/hostile.ready" \
  --log "$REQLOG" --work "$T/work" --deadline 4s --stall 1s --bound 15 \
  --ctd-sock "$CTD_SOCK" --ctd-root "$CTD_ROOT" --ctr "$CTR_BIN" --sanitizer-exit "$SANITIZER_EXIT" \
  --bad-args "${seed_args[@]}" >"$T/fuzz.log" 2>&1
frc=$?
set -e
# Every failure in one line each, then the first ones in full (seed, plan, requests, stderr).
grep -E '^(FAILURE|  problem)' "$T/fuzz.log" | head -n 200 || true
grep -v '^{' "$T/fuzz.log" | grep -v '^what the runs said' | grep -v '^  ' | head -n 400 || true
# The first three failures with their plan, requests and stderr (indented lines).
awk '/^FAILURE/ { n++ } /^(what the runs said|\{)/ { n = 99 } n >= 1 && n <= 3' "$T/fuzz.log" |
  grep '^  ' | head -n 200 || true
sed -n '/^what the runs said/,/^{/p' "$T/fuzz.log" | grep -v '^{' | sed 's/^/# /' || true
SUMMARY=$(grep '^{' "$T/fuzz.log" | tail -n 1)
[ "$frc" -eq 0 ] && [ -n "$SUMMARY" ] || fail "hostile_fuzz.py failed (exit $frc): $(tail -n 20 "$T/fuzz.log")"
log "summary: $SUMMARY"
if [ -n "$SEEDS" ]; then
  echo "# seeds run: $SEEDS"
else
  echo "# seeds run: $SEED..$((SEED + $(jget - 'o["runs"] - o["bad_args_runs"]' <<<"$SUMMARY") - 1)) (and -1: the bad arguments)"
fi

assert_eq 0 "$(jget - 'o["failures"]' <<<"$SUMMARY")" "no run crashed, hung, printed a control byte or left an unverified blob (failed seeds: $(jget - 'o["failed_seeds"]' <<<"$SUMMARY"))"
assert_eq 0 "$(jget - 'o["injected"]' <<<"$SUMMARY")" "no request carried a header or a target the server injected (token with a line break, Location with a space)"
kill -0 "$HOSTILE_PID" || fail "hostile_registry.py died during the run: $(tail -n 5 "$T/logs/hostile.log")"
# containerd takes every file in blobs/sha256 for content: one that is not named by its
# digest (a temp file) makes its garbage collection (after each containerd run) fail.
assert_eq "" "$(grep -E 'invalid digest for blob path|content garbage collection failed' "$T/logs/containerd.log" | head -n 3)" \
  "containerd's garbage collection never met a file in its content store that is not a blob"

if [ -z "$SEEDS" ]; then
  REQ=$(jget - 'o["requests"]' <<<"$SUMMARY")
  assert_num "$REQ" -ge "$MIN_REQ" "mutated answers served in $(jget - 'o["seconds"]' <<<"$SUMMARY") s (at most $((SECS * 3)))"
  # The fuzzer both mutates and lets pulls through: some runs succeed (the stores'
  # code ran), some fail, in every mode.
  assert_num "$(jget - 'o["exit_codes"].get("0", 0)' <<<"$SUMMARY")" -ge 1 "some pulls succeeded"
  assert_num "$(jget - 'o["exit_codes"].get("1", 0)' <<<"$SUMMARY")" -ge 1 "some pulls failed"
  for mode in oci-json oci-text containerd-json; do
    assert_num "$(jget - "o['modes'].get('$mode', 0)" <<<"$SUMMARY")" -ge 1 "runs in mode $mode"
  done
  # Each seed mutates a request with its own chance (0 to 1), and the requests a run
  # makes depend on what it was answered: the count mutated is a sum of coin flips.
  # It must lie within 4 standard deviations of that sum's mean (a fixed share of
  # the requests was not: runs at low chances make the most requests).
  read -r MUTATED MEAN LOW HIGH < <("$PY" -c '
import json, math, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
n = sum(1 for r in rs if r.get("mut"))
mean = sum(r["rate"] for r in rs)
sd = math.sqrt(sum(r["rate"] * (1 - r["rate"]) for r in rs))
print(n, int(mean), max(1, int(mean - 4 * sd)), int(mean + 4 * sd) + 1)' "$REQLOG")
  assert_num "$MUTATED" -ge "$LOW" "requests answered with a mutation (mean $MEAN for these seeds)"
  assert_num "$MUTATED" -le "$HIGH" "and no more than the seeds' chances give"
  assert_num "$MUTATED" -lt "$REQ" "and some answered as a registry would"
fi
