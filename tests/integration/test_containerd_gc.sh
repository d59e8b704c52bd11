#!/usr/bin/env bash
# Between the rename of a verified blob into containerd's content store and its record in
# the namespace (Content.Write under prepull's lease) there is a moment when no metadata
# names the file.  Can containerd's garbage collector take it then?  GC is run back to
# back (a lease created and deleted with --sync, which collects synchronously) while
# prepull places 150 layers: the image must come out complete and unpacked, every time.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
layers=()
for i in $(seq 1 150); do layers+=(--layer "file:none:/f$i=layer-$i"); done
mkimage "$T/src" v1 "${layers[@]}"
push_layout "$T/src" v1 "$REG_ADDR/test/gc:v1"
REF=$REG_ADDR/test/gc:v1
start_containerd
(
  i=0
  while :; do
    i=$((i + 1))
    ctr_ leases create --id "gc-$i" >/dev/null 2>&1 && ctr_ leases delete --sync "gc-$i" >/dev/null 2>&1 &&
      { echo "$i" >"$T/gc-count.tmp" && mv -f "$T/gc-count.tmp" "$T/gc-count"; }
  done
) &
PIDS+=("$!")
GC_PID=$!
for _ in $(seq 1 100); do [ -s "$T/gc-count" ] && break; sleep 0.05; done
before=$(cat "$T/gc-count" 2>/dev/null || echo 0)
prepull_ok "pull 150 layers while containerd collects garbage back to back" pull \
  --store "containerd:$CTD_SOCK" --namespace gc --state-dir "$T/state" "$REF"
after=$(cat "$T/gc-count" 2>/dev/null || echo 0)
kill "$GC_PID" 2>/dev/null || true
log "synchronous garbage collections during the pull: $((after - before))"
# Each collection is two ctr processes (tens of ms on a loaded machine): at least a few.
assert_num "$((after - before))" -ge 5 "containerd collected garbage over and over during the pull"
check=$(ctr_ -n gc images check "name==$REF")
assert_contains "$check" "complete \(151/151\)" "every blob survived: ctr images check says complete"
assert_contains "$check" "true *$" "and unpacked"
