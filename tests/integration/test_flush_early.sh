#!/usr/bin/env bash
# A big blob is made durable while it arrives, not all at once at its commit: prepull
# fdatasyncs its partial file on a thread of its own every 64 MiB of chunks that land,
# so the fsync before the rename into the store has little left (on a virtual disk
# whose host caches writes, that fsync took 0.5-0.8 s for a 1.5 GiB blob with the last
# byte already in). Watched with strace: the 160 MiB layer's partial file gets early
# flushes, each before its commit's fsync and rename, from a thread that is not the
# loop's; the 8 MiB layer gets none (it is under the step); -v counts the same
# flushes strace saw; the image verifies.
source "$(dirname "$0")/lib.sh"
need_prepull
command -v strace >/dev/null || fail "strace is not installed (scripts/deps.sh --test)"

start_registry
mkimage "$T/src" v1 --layer random:none:160M:31 --layer random:none:8M:32
push_layout "$T/src" v1 "$REG_ADDR/test/flush:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
SMALL=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
# Paced, so the layer's chunks land over a few seconds, as from a network.
start_faultserver --rate $((16 * 1024 * 1024))

# LeakSanitizer cannot stop the world under a tracer: leaks are the other tests' job.
log "prepull pull -v ... under strace"
set +e
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout -k 5 120 \
  strace -f -tt -y -qq --seccomp-bpf -o "$T/strace.log" \
  -e trace=fdatasync,fsync,rename,renameat,renameat2 \
  "$PREPULL" pull -v --store "oci:$T/oci" --state-dir "$T/state" -j 4 --chunk-size 4M \
  "$FS_ADDR/test/flush:v1" >"$T/pull.out" 2>"$T/pull.err" </dev/null
RC=$?
set -e
check_sanitizer "$RC" "$T/pull.err"
[ "$RC" -eq 0 ] || fail "pull under strace: exit $RC; stderr: $(tail -n 20 "$T/pull.err")"
ok "pull under strace: exit 0"
verify_layout "$T/oci" v1

# strace -f -tt -y: "PID HH:MM:SS.ffffff fdatasync(7</path/x.partial>) = 0"
calls() { # HEX SYSCALL -> "pid time" of each call on the blob's partial file
  grep -E "^[0-9]+ +[0-9:.]+ $2\([0-9]+<[^>]*$1\.partial>" "$T/strace.log" | awk '{print $1, $2}' || true
}
secs() { awk -F: '{ print $1 * 3600 + $2 * 60 + $3 }' <<<"$1"; }

big=${BIG#sha256:} small=${SMALL#sha256:}
early=$(calls "$big" fdatasync)
n_early=$(printf '%s' "$early" | grep -c . || true)
log "layer ${big:0:12}: $n_early early flushes; strace lines: $(wc -l <"$T/strace.log")"
# 160 MiB in 4 MiB chunks: a flush after each 64 MiB, the last one may be dropped
# when one is still queued.
assert_num "$n_early" -ge 1 "the 160 MiB layer's partial file was flushed while it arrived"
assert_num "$n_early" -le 2 "at most one flush per 64 MiB of it"
commit=$(calls "$big" fsync | tail -n 1)
assert_ne "" "$commit" "the layer's commit fsyncs its partial file"
renamed=$(grep -E "^[0-9]+ +([0-9:.]+) rename(at2?)?\(.*$big\.partial" "$T/strace.log" | awk '{print $2}' | tail -n 1)
assert_ne "" "$renamed" "the layer's partial file was renamed into the store"
last_early=$(printf '%s\n' "$early" | tail -n 1)
assert_num "$(awk -v a="$(secs "${last_early#* }")" -v b="$(secs "${commit#* }")" 'BEGIN { print (a < b) }')" \
  -eq 1 "every early flush came before the commit's fsync (${last_early#* } < ${commit#* })"
assert_num "$(awk -v a="$(secs "${last_early#* }")" -v b="$(secs "$renamed")" 'BEGIN { print (a < b) }')" \
  -eq 1 "every early flush came before the rename into the store"
# The flushes run on their own thread: not the one that fsyncs at the commit (the loop).
flush_pids=$(printf '%s\n' "$early" | awk '{print $1}' | sort -u)
assert_eq 1 "$(printf '%s\n' "$flush_pids" | grep -c .)" "the early flushes all came from one thread"
assert_ne "${commit%% *}" "$flush_pids" "that thread is not the loop thread, which fsyncs at the commit"

assert_eq "" "$(calls "$small" fdatasync)" "the 8 MiB layer (under the 64 MiB step) got no early flush"
assert_ne "" "$(calls "$small" fsync)" "the 8 MiB layer was fsynced at its commit"

line=$(grep -E 'flush: [0-9]+ early flushes of partial files' "$T/pull.err" || true)
assert_ne "" "$line" "-v reports the early flushes"
n_v=$(sed -E 's/.*flush: ([0-9]+) early.*/\1/' <<<"$line")
assert_eq "$n_early" "$n_v" "-v counts the flushes strace saw"
