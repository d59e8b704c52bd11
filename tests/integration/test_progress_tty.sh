#!/usr/bin/env bash
# The live display tells the truth about waiting, as a person sees it in a terminal
# (tmux, 120x30, the screen captured every 0.1 s while a real pull runs).  Three
# images into a private containerd through the fault server, which paces every
# connection to 1 MB/s; two connections, so the images come one after the other:
#   a  6 MiB of random data: downloads first, for a few seconds;
#   b  2 MiB: waits for a, then downloads;
#   c  15000 small files: a small blob that takes a second or two to unpack.
# Asserted on the screens:
#   - an image not started yet says queued, with no rate and no ETA;
#   - an image downloading shows its bytes, a rate and an ETA; no row and no total
#     ever shows an ETA in hours;
#   - c, its bytes all in while its layer is still being unpacked, says so;
#   - the final screen: each image done, the summary line, no display left over;
#     and containerd has the three images, unpacked.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull
command -v tmux >/dev/null || cannot_run "tmux not installed (scripts/deps.sh --test installs it)"

start_registry
mkimage "$T/src" a --layer random:gzip:6M:1 --label a
push_layout "$T/src" a "$REG_ADDR/test/a:v1"
mkimage "$T/src" b --layer random:gzip:2M:2 --label b
push_layout "$T/src" b "$REG_ADDR/test/b:v1"
mkimage "$T/src" c --layer file:gzip:/etc/c=c --layer files:gzip:15000 --label c
push_layout "$T/src" c "$REG_ADDR/test/c:v1"
start_faultserver --rate 1000000
A=$FS_ADDR/test/a:v1
B=$FS_ADDR/test/b:v1
C=$FS_ADDR/test/c:v1
start_containerd
NS=progress

# ---- the pull, in tmux on a private server socket
TMUX_SOCK=$T/tmux.sock
tm() { tmux -S "$TMUX_SOCK" "$@"; }
add_exit_hook "tmux -S '$TMUX_SOCK' kill-server 2>/dev/null"
# prepull writes straight to the pane; its exit code goes to a file, and the pane
# stays until the test has read it.
cat >"$T/run.sh" <<EOF
'$PREPULL' pull --store 'containerd:$CTD_SOCK' --namespace $NS --state-dir '$T/state' \\
  -j 2 --chunk-size 1M '$A' '$B' '$C'
echo \$? >'$T/rc'
sleep 600
EOF
tm new-session -d -s pull -x 120 -y 30 "bash '$T/run.sh'"
PIDS+=("$(tm display-message -p -t pull '#{pid}')")

SCREENS=$T/screens
: >"$SCREENS"
n=0
while [ ! -s "$T/rc" ]; do
  n=$((n + 1))
  [ "$n" -lt 600 ] || fail "the pull did not end within 60 s: $(tm capture-pane -p -t pull | tail -n 8)"
  { echo "=== screen $n"; tm capture-pane -p -t pull; } >>"$SCREENS"
  sleep 0.1
done
sleep 0.2
FINAL=$(tm capture-pane -p -t pull)
log "$n screens captured; the final one:"
printf '%s\n' "$FINAL" | sed 's/^/#   /'
assert_eq 0 "$(cat "$T/rc")" "the pull in the terminal succeeded"

rows() { # NAME -> every row of that image on any screen
  grep -E "^  $(sed 's/[.]/[.]/g' <<<"$1") " "$SCREENS" || true
}
num='[0-9]+(\.[0-9])? (B|KiB|MiB)'

# ---- queued: b and c wait while a downloads
for img in "$B" "$C"; do
  r=$(rows "$img")
  assert_contains "$r" "^  $img +queued, $num of $num \([0-9]+%\)$" "$img: shown as queued while it waits"
  assert_eq "" "$(grep queued <<<"$r" | grep -E 'MB/s|ETA' || true)" "$img: a queued row has no rate and no ETA"
done

# ---- downloading: a shows its bytes, a rate and an ETA
assert_contains "$(rows "$A")" "^  $A +$num of 6[.]0 MiB \([0-9]+%\), [0-9]+\.[0-9] MB/s, ETA [0-9]+s$" \
  "$A: downloading, with a rate and an ETA"
assert_contains "$(grep -E '^  \[' "$SCREENS" || true)" "^  \[#* *\] +[0-9]+%  $num / $num  [0-9]+\.[0-9] MB/s  ETA [0-9]+s$" \
  "the total line: bytes, the overall rate and an ETA"
hours=$(grep -E 'ETA [0-9]+h' "$SCREENS" || true)
assert_eq "" "$hours" "no ETA in hours anywhere (nothing here takes more than seconds)"

# ---- unpacking: c's bytes are in while its files are still being written
r=$(rows "$C")
assert_contains "$r" "^  $C +all $num in, unpacking layer [12] of 2$" "$C: shown as unpacking once its bytes are in"
# It goes queued, then (maybe briefly) downloading, then unpacking; its "done" is
# the line the pull prints once it is registered (on the final screen, below).
order=$(grep -oE 'queued|unpacking|done' <<<"$r" | uniq | tr '\n' ' ')
assert_contains "$order" "^queued .*unpacking (done )?$" "$C: queued, then unpacking ($order)"
assert_contains "$(grep -E '^  \[' "$SCREENS" || true)" "^  \[#{30}\] 100%  $num / $num  all in, unpacking [12] layers?$" \
  "the total line says the bytes are all in and layers are unpacking"

# ---- the final screen
for img in "$A" "$B" "$C"; do
  assert_contains "$FINAL" "^prepull: $img: done$" "final screen: $img done"
done
assert_contains "$FINAL" "^prepull: 3 images \(0 failed\), $num in store, $num downloaded in [0-9.]+ s \([0-9.]+ MB/s\)$" \
  "final screen: the summary line"
assert_eq "" "$(grep -E '^  |queued|unpacking|ETA' <<<"$FINAL" || true)" "final screen: no display left over"

# ---- and containerd has them, unpacked
for img in "$A" "$B" "$C"; do
  check=$(ctr_ -n "$NS" images check "name==$img")
  assert_contains "$check" "complete \(([0-9]+)/\1\)" "$img: complete in containerd"
  assert_contains "$check" "true *$" "$img: unpacked in containerd"
done
