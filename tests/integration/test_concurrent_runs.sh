#!/usr/bin/env bash
# Concurrency as the README promises it: a second run on the same state dir waits for a
# blob another run is fetching, saying so with that run's pid; `prepull status` shows
# the pid of the live pull; when the first run dies (SIGKILL) the second takes the
# partial blob over and completes it, fetching again no more than the kill lost; two
# runs writing different images into one index.json at the same time both end up there.
source "$(dirname "$0")/lib.sh"
need_prepull

MIB=$((1024 * 1024))
start_registry
mkimage "$T/src" x --layer random:none:24M:151
push_layout "$T/src" x "$REG_ADDR/test/conc:x"
mkimage "$T/src" y --layer random:none:3M:152 --label y
push_layout "$T/src" y "$REG_ADDR/test/conc:y"
mkimage "$T/src" z --layer random:none:3M:153 --label z
push_layout "$T/src" z "$REG_ADDR/test/conc:z"
BIG=$(img_field x 'o["platforms"]["linux/amd64"]["layers"][0]')
BIG_SIZE=$(stat -c %s "$T/src/blobs/sha256/${BIG#sha256:}")
DX=$(img_field x 'o["digest"]')
DY=$(img_field y 'o["digest"]')
DZ=$(img_field z 'o["digest"]')
start_faultserver --rate $MIB # 4 x 1 MiB/s: ~6 s for the big blob
STATE=$T/state
ARGS=(pull --store "oci:$T/oci" --state-dir "$STATE" -j 4 --chunk-size 2M "$FS_ADDR/test/conc:x")

# ---- run A fetches; status shows its pid; run B waits for it
started() { [ "$(fs_live_bytes "$BIG")" -ge $((2 * MIB)) ]; }
start_prepull_bg "${ARGS[@]}"
A_PID=$PP_PID A_OUT=$PP_OUTF A_ERR=$PP_ERRF
wait_until 30 started || fail "run A did not start fetching"
run_prepull status --state-dir "$STATE"
line=$(grep -F "$BIG" <<<"$OUT" || true)
assert_contains "$line" "\(being fetched by pid $A_PID\)" "status shows the pid of the live pull [$line]"

start_prepull_bg "${ARGS[@]}"
B_PID=$PP_PID B_OUT=$PP_OUTF B_ERR=$PP_ERRF
waiting() { grep -qF "blob ${BIG:0:19} is being fetched by another prepull run (pid $A_PID); waiting for it" "$B_ERR"; }
wait_until 20 waiting || fail "run B did not say it waits for run A (pid $A_PID): $(cat "$B_ERR")"
ok "run B says the blob is being fetched by another prepull run (pid $A_PID) and waits"
kill -0 "$B_PID" || fail "run B did not wait"
ok "run B is still there, waiting"
# Let A get well into the blob, so that what B must not fetch again is a lot.
far() { [ "$(fs_live_bytes "$BIG")" -ge $((BIG_SIZE * 4 / 10)) ]; }
wait_until 30 far || fail "run A did not get 40% into the blob"

# ---- A dies; B takes the partial blob over
PP_PID=$A_PID PP_OUTF=$A_OUT PP_ERRF=$A_ERR
kill_prepull KILL
assert_eq 137 "$RC" "run A died of SIGKILL"
sent_a=$(fs_live_bytes "$BIG")
log "run A was sent $sent_a bytes of the blob"
PP_PID=$B_PID PP_OUTF=$B_OUT PP_ERRF=$B_ERR
wait_prepull 90
assert_eq 0 "$RC" "run B completes after run A died"
verify_layout "$T/oci" x
cmp -s "$T/oci/blobs/sha256/${BIG#sha256:}" "$T/src/blobs/sha256/${BIG#sha256:}" ||
  fail "the committed blob differs from the pushed one"
ok "the committed blob is byte-identical to the pushed one"
assert_eq "$DX" "$(index_entries "$T/oci" | cut -d' ' -f1)" "index.json has the image"
settle
total=$(fs_live_bytes "$BIG")
lost=$((total - BIG_SIZE))
log "served $total bytes for a $BIG_SIZE-byte blob ($sent_a to run A); fetched twice: $lost"
assert_num "$sent_a" -ge $((BIG_SIZE * 4 / 10)) "run A had fetched 40% of the blob when it died"
# What the kill lost: per lane, the bytes since its last checkpoint (1 MiB) and on the wire.
assert_num "$lost" -le $((4 * (MIB + 384 * 1024))) "run B fetched again at most what the kill lost (4 lanes x 1.4 MiB)"

# ---- two runs, two images, one index.json, at the same time: run Y is held (by
# lock_gate.c) after it read index.json and before it writes it back; run Z, meanwhile,
# must wait for Y's lock rather than write an index.json that Y then overwrites.
GATE=$T/lock_gate.so
cc -shared -fPIC -O2 -o "$GATE" "$IT_DIR/lock_gate.c" -ldl 2>"$T/logs/cc.log" ||
  cannot_run "cannot build lock_gate.c: $(cat "$T/logs/cc.log")"
PRELOAD=$GATE
asan=$(ldd "$PREPULL" | awk '/libasan/ { print $3 }')
[ -z "$asan" ] || PRELOAD=$asan:$GATE
fs_rules '{"rules": [], "rate": 0}'
PP_INDEX_GATE_READY=$T/index-ready PP_INDEX_GATE_GO=$T/index-go LD_PRELOAD=$PRELOAD \
  start_prepull_bg pull --store "oci:$T/oci" --state-dir "$T/state-y" -j 2 "$FS_ADDR/test/conc:y"
Y_PID=$PP_PID Y_OUT=$PP_OUTF Y_ERR=$PP_ERRF
wait_until 30 test -e "$T/index-ready" || fail "run Y never got to write index.json"
ok "run Y read index.json and is held before writing it"
start_prepull_bg pull --store "oci:$T/oci" --state-dir "$T/state-z" -j 2 "$FS_ADDR/test/conc:z"
Z_PID=$PP_PID Z_OUT=$PP_OUTF Z_ERR=$PP_ERRF
ZL=$(img_field z 'o["platforms"]["linux/amd64"]["layers"][0]')
wait_until 30 test -e "$T/oci/blobs/sha256/${ZL#sha256:}" || fail "run Z did not commit its layer"
sleep 1
kill -0 "$Z_PID" 2>/dev/null || fail "run Z finished while run Y held index.json: it did not wait for the lock"
ok "run Z waits for the layout's lock while run Y holds it"
touch "$T/index-go"
PP_PID=$Y_PID PP_OUTF=$Y_OUT PP_ERRF=$Y_ERR
wait_prepull 60
assert_eq 0 "$RC" "run Y exits 0"
PP_PID=$Z_PID PP_OUTF=$Z_OUT PP_ERRF=$Z_ERR
wait_prepull 60
assert_eq 0 "$RC" "run Z exits 0"
entries=$(index_entries "$T/oci")
assert_contains "$entries" "^$DX x " "index.json still has image x"
assert_contains "$entries" "^$DY y " "index.json has image y"
assert_contains "$entries" "^$DZ z " "index.json has image z"
assert_eq 3 "$(grep -c . <<<"$entries")" "index.json has exactly the three images"
verify_layout "$T/oci" y
verify_layout "$T/oci" z
