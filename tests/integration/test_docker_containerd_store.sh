#!/usr/bin/env bash
# The docker store with a daemon that keeps its images in containerd (the
# containerd image store, DriverStatus driver-type io.containerd.snapshotter.v1):
# prepull places the image through that containerd, in Docker's namespace moby,
# with the options it was given (snapshotter) and the namespace changed.  The
# Engine API is the fake one (fake_dockerd.py) answering /info as such a daemon
# does, pointing at a real private containerd.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/containerd.sh"
need_prepull

start_registry
start_containerd
mkimage "$T/src" v1 --layer busybox:gzip --layer file:gzip:/etc/which=moby
push_layout "$T/src" v1 "$REG_ADDR/test/moby:v1"
REF=$REG_ADDR/test/moby:v1

# fake_dockerd.py with /info saying "containerd image store at $CTD_SOCK".
cat >"$T/fake_ctd_dockerd.py" <<'PYEOF'
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("fake_dockerd", sys.argv[1])
fd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fd)
sock, ctd = sys.argv[2], sys.argv[3]
base = fd.make_handler
def make_handler(args, state):
    H = base(args, state)
    class C(H):
        def do_GET(self):
            if self.path_only() == "/info":
                return self.reply(200, json.dumps({
                    "Driver": "overlayfs",
                    "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
                    "Containerd": {"Address": "unix://" + ctd, "Namespaces": {
                        "Containers": "moby", "Plugins": "plugins.moby"}},
                    "ServerVersion": args.engine_version}))
            return H.do_GET(self)
    return C
fd.make_handler = make_handler
sys.argv = [sys.argv[0], "--socket", sock, "--api-version", "1.47", "--engine-version", "28.5.2"]
fd.main()
PYEOF
FAKE_SOCK=$T/docker.sock
bg fake-dockerd "$PY" "$T/fake_ctd_dockerd.py" "$IT_DIR/fake_dockerd.py" "$FAKE_SOCK" "$CTD_SOCK"
for _ in $(seq 1 100); do
  curl -s --max-time 1 --unix-socket "$FAKE_SOCK" http://docker/_ping 2>/dev/null | grep OK >/dev/null && break
  sleep 0.1
done

prepull_ok "pull through the docker store" pull -v --json --store "docker:$FAKE_SOCK" \
  --snapshotter native --state-dir "$T/state" "$REF"
# --json: each layer unpacked by containerd (prepull's own apply needs overlayfs).
by=$(json_events "$OUT" layer_unpacked | "$PY" -c '
import json, sys
print(" ".join(o["unpacked_by"] + ":" + o["chain_id"][:7] for o in map(json.loads, sys.stdin)))')
assert_eq "containerd:sha256: containerd:sha256:" "$by" "--json: a layer_unpacked event per layer, unpacked by containerd"
assert_contains "$ERR" "store containerd:$CTD_SOCK \(namespace moby, snapshotter native\)" \
  "the store is Docker's containerd, namespace moby, the snapshotter asked for"
check=$(ctr_ -n moby images check "name==$REF" 2>&1) || true
log "$check"
assert_contains "$check" "complete \(([0-9]+)/\1\)" "ctr -n moby images check: complete"
assert_eq moby "$(ctr_ -n moby run --rm --snapshotter native "$REF" prepull-moby /bin/cat /etc/which 2>&1 || true)" \
  "ctr run in namespace moby"
assert_eq "" "$(ctr_ -n default images ls -q)" "nothing placed in the default namespace"
