#!/usr/bin/env bash
# SIGTERM while prepull waits on containerd: a gRPC call in flight (a Diff.Apply, a
# snapshot call from the unpacking worker) or register waiting for the unpacks. To make
# the wait as long as a slow unpack could, containerd is frozen (SIGSTOP) once the top
# layer's bytes are in (half-way for prepull's own unpacker, which applies a layer as
# it arrives); then prepull gets SIGTERM. It must exit promptly (a call in
# flight gets 2 s, then it is abandoned; waits look at the stop), not after the calls'
# timeouts (120 s, an hour for Diff.Apply). With containerd thawed, the next run
# completes. Both unpackers: containerd's (Diff.Apply) and prepull's own.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
# One image per unpacker: a layer already in containerd's content store is not fetched.
declare -A TOPS
seed=211
for unpacker in containerd prepull; do
  mkimage "$T/src" "$unpacker" --layer busybox:gzip --layer "random:gzip:16M:$seed" --label "$unpacker"
  push_layout "$T/src" "$unpacker" "$REG_ADDR/test/ctdstop-$unpacker:v1"
  TOPS[$unpacker]=$(img_field "$unpacker" 'o["platforms"]["linux/amd64"]["layers"][1]')
  seed=$((seed + 1))
done
start_faultserver --rate 2000000 # 4 x 2 MB/s: the top layer takes about 2 s
start_containerd

top_served() { [ "$(fs_live_bytes "${TOP#sha256:}")" -ge "$FREEZE_AT" ]; }

thawed=1
add_exit_hook 'kill -CONT "$CTD_PID" 2>/dev/null'
for unpacker in containerd prepull; do
  ns=stop-$unpacker
  TOP=${TOPS[$unpacker]}
  TOP_SIZE=$(stat -c %s "$T/src/blobs/sha256/${TOP#sha256:}")
  REF=$FS_ADDR/test/ctdstop-$unpacker:v1
  # containerd's Diff.Apply starts once the layer is in; prepull's own unpacker applies
  # it as it arrives (and then commits the snapshot), so it is frozen half-way.
  # Frozen while the last 2 MiB still come (at 2 MB/s a lane): prepull then meets the
  # frozen daemon with a call in flight (registering the blob, or the apply), never
  # after it has finished everything (a 16 MiB Diff.Apply can outrun this script's poll).
  FREEZE_AT=$((TOP_SIZE - 2 * 1048576))
  [ "$unpacker" = prepull ] && FREEZE_AT=$((TOP_SIZE / 2))
  ARGS=(pull --store "containerd:$CTD_SOCK" --namespace "$ns" --unpacker "$unpacker" --state-dir "$T/state-$unpacker" -j 4 "$REF")
  curl -sf -X POST "$FS_URL/_stats/reset" >/dev/null
  start_prepull_bg "${ARGS[@]}"
  wait_until 30 top_served || fail "$unpacker: the top layer was not served within 30 s"
  kill -STOP "$CTD_PID"
  thawed=0
  ok "$unpacker: containerd frozen once $FREEZE_AT bytes of the top layer were served"
  sleep 1
  t0=$(date +%s.%N)
  kill -0 "$PP_PID" 2>/dev/null || fail "$unpacker: prepull ended before containerd could be frozen under it"
  kill -TERM "$PP_PID"
  wait_prepull 40
  secs=$(elapsed_since "$t0")
  log "$unpacker: exit $RC ${secs}s after SIGTERM"
  kill -CONT "$CTD_PID"
  thawed=1
  assert_num "$(awk -v s="$secs" 'BEGIN { print (s < 10) }')" -eq 1 "$unpacker: exited ${secs}s after SIGTERM with containerd frozen (< 10 s)"
  assert_eq 1 "$RC" "$unpacker: SIGTERM: exit 1"
  assert_contains "$ERR" "interrupted" "$unpacker: the run says it was interrupted"
  prepull_ok "$unpacker: with containerd thawed, the next run completes" "${ARGS[@]}"
  assert_contains "$(ctr_ -n "$ns" images ls -q)" "test/ctdstop-$unpacker:v1" "$unpacker: the image is in containerd"
done
[ "$thawed" = 1 ]
