#!/usr/bin/env bash
# The containerd store when things go wrong: containerd not running (no socket,
# a dead socket), permission denied, an unknown snapshotter — each one clear
# line; and a registry serving a corrupted layer: the blob is never placed in
# the content store nor recorded, and no image is registered.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:gzip:256K:3
push_layout "$T/src" v1 "$REG_ADDR/test/bad:v1"
REF=$REG_ADDR/test/bad:v1
STATE=$T/state

# ---- containerd not running: no socket at all
run_prepull pull --store "containerd:$T/nope/containerd.sock" --state-dir "$STATE" "$REF"
assert_eq 1 "$RC" "no socket: exit 1"
assert_contains "$ERR" "containerd socket $T/nope/containerd.sock does not exist: is containerd running" \
  "no socket: the message says containerd is not running"
assert_eq 1 "$(grep -c . <<<"$ERR")" "no socket: one line on stderr"

# ---- a socket nobody listens on (containerd died)
"$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/dead.sock"
run_prepull pull --store "containerd:$T/dead.sock" --state-dir "$STATE" "$REF"
assert_eq 1 "$RC" "dead socket: exit 1"
assert_contains "$ERR" "cannot connect to containerd at $T/dead.sock: Connection refused \(is containerd running\?\)" \
  "dead socket: connection refused, is containerd running?"

start_containerd
CONTENT=$CTD_ROOT/io.containerd.content.v1.content

# ---- not a containerd socket owner: permission denied
# As nobody, with a copy of the binary nobody can run: never skipped.
prepull_for_nobody
chmod 711 "$T"
mkdir -p "$T/nobody"
chmod 1777 "$T/nobody" # sticky, as /tmp: prepull refuses a state dir others could swap
set +e
runuser -u nobody -- env HOME="$T/nobody" "$NOBODY_PREPULL" pull --store "containerd:$CTD_SOCK" \
  --state-dir "$T/nobody/state" "$REF" >"$T/nobody.out" 2>"$T/nobody.err"
rc=$?
set -e
chmod 700 "$T"
check_sanitizer "$rc" "$T/nobody.err"
assert_eq 1 "$rc" "permission denied: exit 1"
assert_contains "$(cat "$T/nobody.err")" "containerd socket $CTD_SOCK: permission denied" "permission denied: said so"

# ---- unknown snapshotter: a usage error naming what containerd has
run_prepull pull --store "containerd:$CTD_SOCK" --snapshotter nosuch --state-dir "$STATE" "$REF"
assert_eq 2 "$RC" "unknown snapshotter: exit 2"
assert_contains "$ERR" "--snapshotter nosuch: containerd has no such snapshotter \(it has: .*overlayfs" \
  "unknown snapshotter: the message lists the snapshotters containerd has"

# ---- a corrupted layer in the registry (same size, other bytes)
read -r BAD < <(img_field v1 'o["platforms"]["linux/amd64"]["layers"][1]')
hex=${BAD#sha256:}
data=$REG_ROOT/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
[ -f "$data" ] || fail "registry blob file $data not found"
printf 'corrupted!' | dd of="$data" bs=1 seek=1000 conv=notrunc status=none
run_prepull pull --store "containerd:$CTD_SOCK" --namespace bad --state-dir "$STATE" "$REF"
assert_eq 1 "$RC" "corrupted layer: exit 1"
assert_contains "$ERR" "${BAD:0:19}.*hashes to" "corrupted layer: the error names the blob and the digest mismatch"
[ ! -e "$CONTENT/blobs/sha256/$hex" ] || fail "the corrupted blob was placed in the content store"
ok "corrupted layer: not in the content store"
assert_not_contains "$(ctr_ -n bad content ls -q)" "$BAD" "corrupted layer: not recorded in the namespace"
assert_eq "" "$(ctr_ -n bad images ls -q)" "corrupted layer: no image registered"
assert_eq "" "$(find "$STATE" "$CONTENT" -name "$hex*" | head -n 3)" "corrupted layer: no partial file left"
assert_contains "$(ctr_ -n bad leases ls)" "prepull-.*containerd.io/gc.expire=" \
  "failed run: the lease stays, with an expiry, for the next run"
