#!/usr/bin/env bash
# Progress for people at boot and by hand, through nginx with a per-connection
# rate limit so a pull lasts a few seconds:
# - without a terminal (systemd, cloud-init): a line to stderr every 5 s for each
#   image still coming, with its bytes, rate and ETA, then a total line;
# - on a terminal (`script` gives prepull a pty): a live display redrawn in place;
# - -q: nothing but the summary, on a terminal too.
source "$(dirname "$0")/lib.sh"
need_prepull
command -v script >/dev/null || cannot_run "script (util-linux) not installed"

start_registry
NP=$(free_port)
nginx_conf_proxy "$T/ngx" "$NP" "$REG_ADDR" 512k
start_nginx "$T/ngx/nginx.conf" "$NP"
mkimage "$T/src" a --layer random:gzip:4M:1 --label a
push_layout "$T/src" a "$REG_ADDR/test/a:v1"
mkimage "$T/src" b --layer random:gzip:3M:2 --label b
push_layout "$T/src" b "$REG_ADDR/test/b:v1"
A=127.0.0.1:$NP/test/a:v1
B=127.0.0.1:$NP/test/b:v1

# ---- no terminal: 7 MiB over 2 connections of 512 KiB/s lasts about 7 s, so at
# least one round of progress lines is printed (at 5 s).
start=$(date +%s.%N)
prepull_ok "pull two images without a terminal" pull --store "oci:$T/oci1" --state-dir "$T/s1" -j 2 --chunk-size 512K "$A" "$B"
secs=$(elapsed_since "$start")
log "took $secs s"
assert_num "${secs%.*}" -ge 5 "the pull lasted long enough for a progress line"
lines=$(printf '%s\n' "$ERR" | grep '^prepull: progress: ' || true)
log "progress lines:"
printf '%s\n' "$lines" | sed 's/^/#   /'
num='[0-9]+(\.[0-9])? (B|KiB|MiB)'
per_image="^prepull: progress: ($A|$B): $num of $num \([0-9]+%\), [0-9]+\.[0-9] MB/s, ETA ([0-9]+s|[0-9]+m[0-9]+s|--)$"
assert_contains "$lines" "$per_image" "a per-image line: image, bytes of total (percent), rate, ETA"
total="^prepull: progress: $num of $num \([0-9]+%\), [0-9]+\.[0-9] MB/s, ETA "
# An image that has not started (or gets no bytes now) has no rate and no ETA.
idle="^prepull: progress: ($A|$B): (queued|waiting), $num of $num \([0-9]+%\)$"
assert_eq "" "$(printf '%s\n' "$lines" | grep -Ev "$per_image|$total|$idle" || true)" "every progress line is an image line or a total line"
assert_not_contains "$ERR" $'\033' "no terminal escapes without a terminal"
assert_contains "$ERR" "^prepull: 2 images \(0 failed\)" "summary line"

# ---- a terminal: the live display (cursor-up + erase-line), one row per image
script -qfec "'$PREPULL' pull --store 'oci:$T/oci2' --state-dir '$T/s2' -j 8 --chunk-size 512K '$A' '$B'" "$T/tty.log" >/dev/null 2>&1 </dev/null ||
  fail "pull on a pty failed: $(tail -c 600 "$T/tty.log")"
tty=$(cat "$T/tty.log")
assert_contains "$tty" $'\033\\[1A\033\\[2K' "terminal: the display redraws in place"
assert_contains "$tty" "  $A +([0-9.]+ (KiB|MiB) of|done)" "terminal: a row for image a"
assert_contains "$tty" "\[#* *\] +[0-9]+%  .* MB/s  ETA " "terminal: a total bar with rate and ETA"
assert_contains "$tty" "prepull: 2 images \(0 failed\)" "terminal: summary line"
assert_not_contains "$tty" "prepull: progress:" "terminal: no periodic log lines"

# ---- -q on a terminal: only the summary
script -qfec "'$PREPULL' pull -q --store 'oci:$T/oci3' --state-dir '$T/s3' -j 8 '$A'" "$T/tty-q.log" >/dev/null 2>&1 </dev/null ||
  fail "pull -q on a pty failed: $(tail -c 600 "$T/tty-q.log")"
q=$(tr -d '\r' <"$T/tty-q.log" | grep -v '^Script \(started\|done\)' | grep . || true)
assert_eq 1 "$(printf '%s\n' "$q" | grep -c .)" "-q on a terminal: one line"
assert_contains "$q" "^prepull: 1 image \(0 failed\)" "-q on a terminal: the summary"
assert_not_contains "$q" $'\033' "-q on a terminal: no display"
