#!/usr/bin/env bash
# The docker store against a fake Engine API (fake_dockerd.py), for what a real
# dockerd rarely does: no daemon, a stale socket, permission denied, an API too old,
# a load that answers 200 and then an error. And what exactly is streamed to
# /images/load: manifest.json, the config, gzip layers byte-for-byte as fetched,
# zstd layers decompressed (to their DiffID) for a daemon before 23.0 and sent as
# they are for a newer one.
source "$(dirname "$0")/lib.sh"
need_prepull
# The interpreter itself, not a version-manager shim: these tests call Python often.
PY=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$PY")

# fake_daemon NAME ARGS...  -> socket $T/NAME.sock, log $T/logs/NAME.log
fake_daemon() {
  local name=$1
  shift
  bg "$name" "$PY" "$IT_DIR/fake_dockerd.py" --socket "$T/$name.sock" "$@"
  for _ in $(seq 1 100); do
    curl -s --max-time 1 --unix-socket "$T/$name.sock" http://docker/_ping 2>/dev/null | grep OK >/dev/null && return 0
    sleep 0.1
  done
  fail "fake daemon $name not answering"
}

IMG=127.0.0.1:1/test/never:v1 # never reached: the store is opened first

# ---- no daemon
run_prepull pull --store "docker:$T/none.sock" --state-dir "$T/state" "$IMG"
assert_eq 1 "$RC" "no socket: exit 1"
assert_contains "$ERR" "error: store: Docker is not running: no socket at $T/none.sock" \
  "no socket: says Docker is not running"

# ---- a socket left by a daemon that is gone
"$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$T/stale.sock"
run_prepull pull --store "docker:$T/stale.sock" --state-dir "$T/state" "$IMG"
assert_eq 1 "$RC" "stale socket: exit 1"
assert_contains "$ERR" "Docker is not running: nothing listens on $T/stale.sock" \
  "stale socket: says nothing listens"

# ---- API too old
fake_daemon old --api-version 1.12 --engine-version 1.0.0
run_prepull pull --store "docker:$T/old.sock" --state-dir "$T/state" "$IMG"
assert_eq 1 "$RC" "old API: exit 1"
assert_contains "$ERR" "Docker API at $T/old.sock is too old: version 1.12, prepull needs 1.24" \
  "old API: says too old"

# ---- permission denied (as nobody on a root-only socket): never skipped
prepull_for_nobody
P=$(mktemp -d /tmp/prepull-perm.XXXXXX)
add_exit_hook "rm -rf '$P'"
chmod 755 "$P"
bg perm "$PY" "$IT_DIR/fake_dockerd.py" --socket "$P/docker.sock"
for _ in $(seq 1 100); do [ -S "$P/docker.sock" ] && break; sleep 0.1; done
[ -S "$P/docker.sock" ] || fail "fake dockerd made no socket at $P/docker.sock"
chmod 600 "$P/docker.sock"
mkdir -m 700 "$P/state" && chown 65534:65534 "$P/state" # a state dir of its own
set +e
runuser -u nobody -- env HOME="$P" "$NOBODY_PREPULL" pull --store "docker:$P/docker.sock" \
  --state-dir "$P/state" "$IMG" >"$T/nobody.out" 2>"$T/nobody.err"
perm_rc=$?
set -e
check_sanitizer "$perm_rc" "$T/nobody.err"
assert_eq 1 "$perm_rc" "permission denied: exit 1"
assert_contains "$(cat "$T/nobody.err")" "permission denied on the docker socket $P/docker.sock" \
  "permission denied: says so"

# ---- images for the load checks
start_registry
mkimage "$T/src" v1 --layer busybox:gzip --layer random:zstd:2M:3 --layer file:gzip:/etc/x=y \
  --label fake
push_layout "$T/src" v1 "$REG_ADDR/test/fk:v1"
REF=$REG_ADDR/test/fk:v1
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
mapfile -t LAYERS < <(img_field v1 '"\n".join(o["platforms"]["linux/amd64"]["layers"])')
mapfile -t DIFFS < <(jget "$T/src/blobs/sha256/${CONFIG#sha256:}" '"\n".join(o["rootfs"]["diff_ids"])')

# ---- the load answers 200, then an error
fake_daemon bad --load-error "write /var/lib/docker/tmp/docker-import-1/x: no space left on device"
run_prepull pull --store "docker:$T/bad.sock" --state-dir "$T/state-bad" "$REF"
assert_eq 1 "$RC" "load error after 200: exit 1"
assert_contains "$ERR" "error: $REF: docker load of $REF: write /var/lib/docker/tmp/docker-import-1/x: no space left on device" \
  "load error after 200: the daemon's message, with the image"
n_blobs=$(find "$T/state-bad/docker/blobs/sha256" -type f | wc -l)
assert_eq "${#LAYERS[@]}" "$n_blobs" "load error: the verified blobs stay for the next run"

# check_archive TAR ZSTD_SENT_AS(diffid|blob)
check_archive() {
  "$PY" - "$1" "$2" "$T/src/blobs/sha256" "$CONFIG" "$REF" "${LAYERS[*]}" "${DIFFS[*]}" <<'EOF'
import hashlib, json, sys, tarfile
tar, mode, blobs, config, ref, layers, diffs = sys.argv[1:8]
layers, diffs = layers.split(), diffs.split()
t = tarfile.open(tar)
names = t.getnames()
man = json.load(t.extractfile("manifest.json"))
assert len(man) == 1, man
m = man[0]
assert m["RepoTags"] == [ref], m["RepoTags"]
assert m["Config"] == "blobs/sha256/" + config[7:], m["Config"]
assert t.extractfile(m["Config"]).read() == open(blobs + "/" + config[7:], "rb").read(), "config bytes"
assert len(m["Layers"]) == len(layers), m["Layers"]
for path, blob, diff in zip(m["Layers"], layers, diffs):
    data = t.extractfile(path).read()
    raw = open(blobs + "/" + blob[7:], "rb").read()
    if raw[:4] == b"\x28\xb5\x2f\xfd" and mode == "diffid":
        assert path == "blobs/sha256/" + diff[7:], (path, diff)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff, "zstd layer not its DiffID"
        print("zstd layer decompressed to its DiffID", flush=True)
    else:
        assert path == "blobs/sha256/" + blob[7:], (path, blob)
        assert data == raw, "layer %s not sent as fetched" % blob
        print("%s layer sent as fetched" % ("zstd" if raw[:4] == b"\x28\xb5\x2f\xfd" else "gzip"))
assert sorted(names) == sorted(set(m["Layers"]) | {m["Config"], "manifest.json"}), names
EOF
}

# ---- what a daemon before 23.0 receives
mkdir -p "$T/saved20" "$T/saved24"
fake_daemon d20 --engine-version 20.10.24 --api-version 1.41 --save "$T/saved20"
prepull_ok "load into a fake dockerd 20.10" pull --store "docker:$T/d20.sock" --state-dir "$T/s20" "$REF"
assert_contains "$ERR" "cannot read zstd layers: 1 layer decompressed" "20.10: zstd layer decompressed"
res=$(check_archive "$T/saved20/load-1.tar" diffid) || fail "archive for 20.10: $res"
assert_eq "gzip layer sent as fetched
zstd layer decompressed to its DiffID
gzip layer sent as fetched" "$res" "20.10: archive has manifest.json, the config, gzip layers as fetched, the zstd layer as its DiffID"
prepull_ok "second run against the fake 20.10" pull --store "docker:$T/d20.sock" --state-dir "$T/s20" "$REF"
[ ! -e "$T/saved20/load-2.tar" ] || fail "second run loaded again"
ok "second run: no second load"

# ---- what a daemon from 23.0 on receives
fake_daemon d24 --engine-version 24.0.7 --api-version 1.43 --save "$T/saved24"
prepull_ok "load into a fake dockerd 24.0" pull --store "docker:$T/d24.sock" --state-dir "$T/s24" "$REF"
assert_not_contains "$ERR" "decompressed" "24.0: nothing decompressed"
res=$(check_archive "$T/saved24/load-1.tar" blob) || fail "archive for 24.0: $res"
assert_eq "gzip layer sent as fetched
zstd layer sent as fetched
gzip layer sent as fetched" "$res" "24.0: every layer sent as fetched"

# ---- a reference by digest only: docker load takes no digest tags, so it goes in untagged
D=$(img_field v1 'o["digest"]')
mkdir -p "$T/saveddg"
fake_daemon dg --engine-version 20.10.24 --api-version 1.41 --save "$T/saveddg"
prepull_ok "load $REG_ADDR/test/fk@${D:0:19}… by digest" pull --store "docker:$T/dg.sock" \
  --state-dir "$T/sdg" "$REG_ADDR/test/fk@$D"
assert_contains "$ERR" "loaded without a tag .* use the image ID $CONFIG" "digest reference: says to use the image ID"
assert_eq "[]" "$("$PY" -c 'import json,sys,tarfile; print(json.dumps(json.load(tarfile.open(sys.argv[1]).extractfile("manifest.json"))[0]["RepoTags"]))' "$T/saveddg/load-1.tar")" \
  "digest reference: manifest.json has no RepoTags"
