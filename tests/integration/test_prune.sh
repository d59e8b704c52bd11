#!/usr/bin/env bash
# A failed run keeps every verified byte, and `prepull prune` gives the disk back.
#  1. One chunk of an 8 MiB blob is reset for ever; --give-up-after 2s fails the blob
#     (exit 1) after the other chunks landed. Its partial file and journal stay;
#     `prepull status` shows most of it; the next run (fault gone) fetches only what
#     was missing.
#  2. A run stopped by --deadline leaves a partial blob; `prune --older-than 1h` keeps
#     it (too recent); a prune while a live pull uses the staging dir skips that dir; a
#     partial file another process holds locked is kept; then `prune` removes the
#     rest, says how much it freed, and status lists nothing.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" a --layer random:none:8M:201 --label a
push_layout "$T/src" a "$REG_ADDR/test/prune-a:v1"
mkimage "$T/src" b --layer random:none:12M:202 --label b
push_layout "$T/src" b "$REG_ADDR/test/prune-b:v1"
A=$(img_field a 'o["platforms"]["linux/amd64"]["layers"][0]')
B=$(img_field b 'o["platforms"]["linux/amd64"]["layers"][0]')
start_faultserver
STATE=$T/state
ARGS_A=(pull --store "oci:$T/oci-a" --state-dir "$STATE" -j 4 --chunk-size 1M "$FS_ADDR/test/prune-a:v1")

# ---- 1. a failure keeps the verified bytes
OFF=$((5 * 1024 * 1024 + 99))
fs_rules "{\"rules\": [{\"path\": \"$A\", \"fault\": \"reset\", \"after\": 0, \"offset\": $OFF, \"count\": -1}]}"
run_prepull "${ARGS_A[@]}" --give-up-after 2s
assert_eq 1 "$RC" "one chunk reset for ever: exit 1"
assert_contains "$ERR" "kept for the next run" "the error says what the blob has is kept"
[ -e "$STATE/partial/${A#sha256:}.partial" ] && [ -e "$STATE/partial/${A#sha256:}.journal" ] ||
  fail "the failed blob's partial file or journal was deleted"
ok "the failed blob's partial file and journal stay"
run_prepull status --state-dir "$STATE"
line=$(grep -F "$A" <<<"$OUT" || true)
assert_ne "" "$line" "status lists the failed blob"
pct=$(awk '{ print int($2) }' <<<"$line")
assert_num "$pct" -ge 80 "status: most of the blob is kept ($pct%)"
fs_rules '{"rules": []}'
fs_reset_log
prepull_ok "the next run completes" "${ARGS_A[@]}"
verify_layout "$T/oci-a" v1
settle
sent=$(fs_blob_bytes "$A")
log "bytes of the blob fetched by the next run: $sent"
assert_num "$sent" -le $((2 * 1024 * 1024)) "the next run fetched only what was missing ($sent bytes of 8 MiB)"

# ---- 2. prune
start_faultserver --rate $((1024 * 1024)) # 4 x 1 MiB/s: 12 MiB take ~3 s
ARGS_B=(pull --store "oci:$T/oci-b" --state-dir "$STATE" -j 4 --chunk-size 1M "$FS_ADDR/test/prune-b:v1")
run_prepull "${ARGS_B[@]}" --deadline 1s
assert_eq 3 "$RC" "a run stopped by --deadline exits 3"
PB=$STATE/partial/${B#sha256:}.partial
[ -e "$PB" ] || fail "the stopped run left no partial file"
run_prepull prune --older-than 1h --state-dir "$STATE"
assert_eq 0 "$RC" "prune --older-than 1h: exit 0"
assert_contains "$OUT" "kept .*${B#sha256:}.*older-than" "prune --older-than 1h keeps the fresh partial blob"
[ -e "$PB" ] || fail "prune --older-than 1h removed a fresh partial blob"
ok "the fresh partial blob is still there"

# A live run on the same state dir (a slow image): prune leaves the dir alone.
start_prepull_bg "${ARGS_B[@]}"
sleep 1
run_prepull prune --state-dir "$STATE"
assert_eq 0 "$RC" "prune during a live run: exit 0"
assert_contains "$OUT" "skipped $STATE/partial: a prepull run is using it" "prune skips the dir a live run uses"
[ -e "$PB" ] || fail "prune removed a partial blob a live run works on"
ok "the live run's partial blob is still there"
kill_prepull TERM
assert_eq 1 "$RC" "the live run, stopped by SIGTERM: exit 1"

# A partial file another process holds locked (as a run fetching it would) is kept.
"$PY" - "$PB" "$T/locked" "$T/release" <<'PYEOF' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
PYEOF
HOLDER=$!
PIDS+=("$HOLDER")
wait_until 10 test -e "$T/locked" || fail "the lock holder did not start"
run_prepull prune --state-dir "$STATE"
assert_eq 0 "$RC" "prune with a locked partial file: exit 0"
assert_contains "$OUT" "kept .*${B#sha256:}.*being fetched by pid $HOLDER" "prune keeps a partial file another process holds"
[ -e "$PB" ] || fail "prune removed a locked partial file"
ok "the locked partial file is still there"
touch "$T/release"
wait "$HOLDER" 2>/dev/null || true
_forget_pid "$HOLDER"

before=$(du -sk "$STATE/partial" | cut -f1)
run_prepull prune --state-dir "$STATE"
assert_eq 0 "$RC" "prune: exit 0"
assert_contains "$OUT" "removed ${B#sha256:}" "prune removes the partial blob no run wants"
assert_contains "$OUT" "pruned 1 partial blob\(s\), [0-9.]+ MiB freed" "prune says how much it freed"
[ ! -e "$PB" ] && [ ! -e "${PB%.partial}.journal" ] || fail "the partial file or journal is still there"
ok "the partial file and its journal are gone"
after=$(du -sk "$STATE/partial" | cut -f1)
log "partial dir: ${before} KiB -> ${after} KiB"
assert_num "$after" -lt "$before" "the disk was given back"
run_prepull status --state-dir "$STATE"
assert_contains "$OUT" "no partial downloads" "status lists nothing partial after prune"
