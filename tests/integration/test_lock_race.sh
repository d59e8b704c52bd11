#!/usr/bin/env bash
# Two runs and one partial file, with the worst timing: run B opens the partial file,
# and before B takes its lock, run A (which holds it) finishes, renames that very file
# into the store and exits. B must not take the committed file for a partial one (it
# would truncate it and fill it with zeros under its right name): B sees that the path
# no longer names the file it opened, finds the blob in the store and fetches nothing.
# tests/integration/lock_gate.c, preloaded into B, holds B between its open and its lock.
source "$(dirname "$0")/lib.sh"
need_prepull

GATE=$T/lock_gate.so
cc -shared -fPIC -O2 -o "$GATE" "$IT_DIR/lock_gate.c" -ldl 2>"$T/logs/cc.log" ||
  cannot_run "cannot build lock_gate.c: $(cat "$T/logs/cc.log")"
# An ASan build wants its runtime first among preloaded libraries.
PRELOAD=$GATE
asan=$(ldd "$PREPULL" | awk '/libasan/ { print $3 }')
[ -z "$asan" ] || PRELOAD=$asan:$GATE

start_registry
mkimage "$T/src" v1 --layer random:none:8M:17
push_layout "$T/src" v1 "$REG_ADDR/test/race:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
HEX=${BIG#sha256:}
# Through the fault server (no faults): it counts what each run was sent.
start_faultserver
ARGS=(pull --store "oci:$T/oci" --state-dir "$T/state" "$FS_ADDR/test/race:v1")

PP_GATE_READY=$T/gate-ready PP_GATE_GO=$T/gate-go LD_PRELOAD=$PRELOAD start_prepull_bg "${ARGS[@]}"
wait_until 30 test -e "$T/gate-ready" || fail "run B never reached its lock"
inode_b=$(stat -c %i "$T/state/partial/$HEX.partial")
ok "run B opened the partial file (inode $inode_b) and waits before locking it"

settle
assert_eq 0 "$(fs_blob_bytes "$BIG")" "run B fetched nothing of the blob before its lock"
prepull_ok "run A pulls the image meanwhile" "${ARGS[@]}"
settle
assert_eq "$(stat -c %s "$T/src/blobs/sha256/$HEX")" "$(fs_blob_bytes "$BIG")" "run A was sent the blob once"
fs_reset_log
assert_eq "$inode_b" "$(stat -c %i "$T/oci/blobs/sha256/$HEX")" "A committed the very file B has open"
touch "$T/gate-go"
wait_prepull 60
assert_eq 0 "$RC" "run B exits 0"
cmp -s "$T/oci/blobs/sha256/$HEX" "$T/src/blobs/sha256/$HEX" ||
  fail "the committed blob was changed by run B: $(sha256sum <"$T/oci/blobs/sha256/$HEX")"
ok "the committed blob is intact after run B"
assert_store_clean "$T/oci" "after both runs"
fetched=$(printf '%s\n' "$ERR" | grep -o '[0-9.]* [KMG]*i*B downloaded' || true)
assert_contains "$fetched" "^0 B downloaded" "run B downloaded nothing ($fetched)"
settle
assert_eq 0 "$(fs_query 'sum(r["bytes"] for r in L if r["method"] == "GET" and "/blobs/" in r["path"])')" \
  "run B was sent no blob byte (server side)"
assert_eq "" "$(find "$T/state/partial" -name "$HEX.*")" "no partial file or journal left for the blob"
