#!/bin/bash
# Packer provisioner: install prepull, pre-pull the configured images into the
# machine being baked, fail the bake unless every image is in the store and
# verified, then leave the state dir clean for the snapshot. Run as root on the
# machine being baked (scripts/packer/prepull.pkr.hcl or prepull.json run it over
# SSH, or locally).
#
# Environment:
#   PREPULL_DEB            .deb to install: a path, or an http(s) URL. Empty: prepull
#                          must already be installed.
#   PREPULL_CONFIG_SRC     config.json to install as /etc/prepull/config.json. Empty:
#                          keep the one already there.
#   PREPULL_BAKE_DEADLINE  deadline for the bake's pull (default 2h); it replaces the
#                          config's "deadline", which is meant for boot.
#   PREPULL_ENABLE         1 (default): enable prepull.service, so that each boot of
#                          the image checks the images again and writes the ready file.
set -euo pipefail

CONFIG=/etc/prepull/config.json
PREPULL=${PREPULL_BIN:-/usr/bin/prepull}
say() { echo "prepull-bake: $*"; }
die() {
  echo "prepull-bake: error: $*" >&2
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "must run as root"
  exec sudo -E bash "$0" "$@"
fi
command -v python3 >/dev/null || die "python3 is needed to check the result"
work=$(mktemp -d /tmp/prepull-bake.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- install
if [ -n "${PREPULL_DEB:-}" ]; then
  deb=$PREPULL_DEB
  case $deb in
  http://* | https://*)
    say "downloading $deb"
    curl -fsSL --retry 5 -o "$work/prepull.deb" "$deb" || die "cannot download $deb"
    deb=$work/prepull.deb
    ;;
  esac
  [ -f "$deb" ] || die "no .deb at $deb"
  say "installing $(basename "$deb")"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$(realpath "$deb")" >"$work/apt.log" 2>&1 ||
    die "apt-get install failed: $(tail -n 5 "$work/apt.log")"
fi
[ -x "$PREPULL" ] || die "$PREPULL is not installed (set PREPULL_DEB)"
say "$("$PREPULL" --version | head -n 1)"

# ---- configuration
if [ -n "${PREPULL_CONFIG_SRC:-}" ]; then
  [ -f "$PREPULL_CONFIG_SRC" ] || die "no config file at $PREPULL_CONFIG_SRC"
  install -D -m 0644 "$PREPULL_CONFIG_SRC" "$CONFIG"
fi
[ -f "$CONFIG" ] || die "no $CONFIG (set PREPULL_CONFIG_SRC)"
# The images and the state dir, as prepull will read them (it checks the rest).
read_config() {
  python3 - "$CONFIG" "$1" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
if sys.argv[2] == "images":
    print("\n".join(c.get("images", [])))
elif sys.argv[2] == "state_dir":
    print(c.get("state_dir", "/var/lib/prepull"))
elif sys.argv[2] == "ready_file":
    print(c.get("ready_file", ""))
EOF
}
images=$(read_config images) || die "$CONFIG is not valid JSON"
[ -n "$images" ] || die "$CONFIG lists no images"
state_dir=$(read_config state_dir)
boot_ready=$(read_config ready_file)

# ---- pull
say "pulling $(echo "$images" | wc -l) image(s)"
rc=0
"$PREPULL" pull --config "$CONFIG" --json --ready-file "$work/ready" \
  --deadline "${PREPULL_BAKE_DEADLINE:-2h}" >"$work/events.json" || rc=$?
[ "$rc" = 0 ] || die "prepull exited $rc; the images are not all in the store, so this bake fails"

# ---- verify: every configured image is in the ready file with its digest and
# has an image_done event; a second run finds every blob in the store.
"$PREPULL" pull --config "$CONFIG" --json -q --deadline "${PREPULL_BAKE_DEADLINE:-2h}" \
  >"$work/recheck.json" || die "the second run (store check) failed"
python3 - "$work/ready" "$work/events.json" "$work/recheck.json" <<'EOF' || exit 1
import json, re, sys
ready = json.load(open(sys.argv[1]))
def events(path):
    return [json.loads(l) for l in open(path) if l.startswith("{")]
done = {e["image"]: e["digest"] for e in events(sys.argv[2]) if e["event"] == "image_done"}
bad = []
for img in ready["images"]:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", img.get("digest") or ""):
        bad.append("%s: no digest" % img["image"])
    elif done.get(img["image"]) != img["digest"]:
        bad.append("%s: not verified in this run" % img["image"])
recheck = events(sys.argv[3])
summary = [e for e in recheck if e["event"] == "summary"][-1]
if summary["failed"] or summary["fetched"]:
    bad.append("second run: %d failed, %d bytes fetched (expected 0, 0)"
               % (summary["failed"], summary["fetched"]))
if bad:
    sys.exit("prepull-bake: error: " + "; ".join(bad))
for img in ready["images"]:
    print("prepull-bake: %s %s" % (img["image"], img["digest"]))
print("prepull-bake: store %s" % ready["store"])
EOF

# ---- clean up for the snapshot: no partial downloads or journals, no ready
# file (the first boot writes it after its own check).
rm -rf "${state_dir:?}/partial"
[ -z "$boot_ready" ] || rm -f "$boot_ready"
status=$("$PREPULL" status --state-dir "$state_dir")
case $status in
"no partial downloads"*) ;;
*) die "partial downloads left in $state_dir: $status" ;;
esac

if [ "${PREPULL_ENABLE:-1}" = 1 ] && command -v systemctl >/dev/null; then
  systemctl enable prepull.service
fi
say "baked: every image is in the store; $state_dir has no partial downloads"
