#!/usr/bin/env bash
# Packer: `packer validate` accepts scripts/packer/prepull.json (both builders),
# and a real `packer build -only=local` (null builder, shell-local provisioner
# running scripts/packer/provision.sh) bakes against the loopback registry:
# the .deb is installed with apt-get, the images land in the store, the state
# dir is left without partial downloads, the unit is enabled. A bake whose
# config names a missing image fails (packer exits non-zero). Builds run in the
# overlay sandbox, so the host's /etc, /usr and /var are untouched.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull
command -v packer >/dev/null || cannot_run "packer not installed (scripts/deps.sh installs it)"
TEMPLATE=$PREPULL_SRC/scripts/packer/prepull.json
# Packer must not phone home (no network here), and keeps its files in $T.
export CHECKPOINT_DISABLE=1 PACKER_CACHE_DIR=$T/packer_cache HOME=$T/home PACKER_NO_COLOR=1
mkdir -p "$HOME"
cd "$T"

build_deb
start_registry
mkimage "$T/src" app --layer busybox:gzip --layer random:gzip:3M:1 --label app
push_layout "$T/src" app "$REG_ADDR/team/app:v1"
mkimage "$T/src" side --layer random:zstd:1M:2 --label side
push_layout "$T/src" side "$REG_ADDR/team/side:2"

OCI=$T/oci-bake
cat >"$T/config.json" <<JSON
{
  "images": ["$REG_ADDR/team/app:v1", "$REG_ADDR/team/side:2"],
  "store": "oci:$OCI",
  "connections": 8,
  "deadline": "10m",
  "ready_file": "/run/prepull/ready"
}
JSON
VARS=(-var "prepull_deb=$DEB" -var "prepull_config=$T/config.json")

# ---- validate
out=$(packer validate "${VARS[@]}" -var do_api_token=dummy-token "$TEMPLATE" 2>&1) ||
  fail "packer validate: $out"
ok "packer validate accepts the template (digitalocean + local builders)"
if packer validate "${VARS[@]}" -var do_api_token=x -var prepull_deb=$T/nope.deb "$TEMPLATE" >"$T/logs/validate-bad.log" 2>&1; then
  fail "packer validate accepted a template whose .deb does not exist"
fi
ok "packer validate refuses a missing .deb"

# ---- a real bake (null builder, shell-local)
cat >"$T/bake.sh" <<BAKE
set -u
rc=0
packer build -only=local ${VARS[*]} "$TEMPLATE" >"$T/out/packer.log" 2>&1 || rc=\$?
echo \$rc >"$T/out/rc"
ls -A /var/lib/prepull >"$T/out/state-dir" 2>&1
/usr/bin/prepull status >"$T/out/status" 2>&1
ls /run/prepull/ready >"$T/out/ready" 2>&1
dpkg-query -W -f='\${Status}' prepull >"$T/out/dpkg" 2>&1
cp /etc/prepull/config.json "$T/out/config.json"
BAKE
mkdir -p "$T/out"
SANDBOX_LOG_DIR=$T/out sandbox bash "$T/bake.sh"
sed 's/^/#   packer: /' "$T/out/packer.log" | grep -E 'prepull-bake|Error|error' | head -n 20
assert_eq 0 "$(cat "$T/out/rc")" "packer build -only=local exits 0"
PL=$(cat "$T/out/packer.log")
assert_contains "$PL" "prepull-bake: installing prepull_" "bake: the .deb is installed"
assert_contains "$PL" "prepull-bake: $REG_ADDR/team/app:v1 $(img_field app 'o["digest"]')" "bake: app image verified with its digest"
assert_contains "$PL" "prepull-bake: $REG_ADDR/team/side:2 $(img_field side 'o["digest"]')" "bake: side image verified with its digest"
assert_contains "$PL" "Builds finished. The artifacts of successful builds are" "packer reports a finished build"
assert_eq "install ok installed" "$(cat "$T/out/dpkg")" "bake: prepull is installed in the image"
cmp -s "$T/config.json" "$T/out/config.json" || fail "bake: /etc/prepull/config.json differs from the given config"
ok "bake: /etc/prepull/config.json is the given config"
assert_contains "$(cat "$T/out/status")" "^no partial downloads" "bake: prepull status finds no partial downloads"
assert_not_contains "$(cat "$T/out/state-dir")" "partial" "bake: no partial/ left in the state dir"
assert_contains "$(cat "$T/out/ready")" "No such file" "bake: no ready file left in the image"
assert_contains "$(cat "$T/out/systemctl.log")" "^systemctl enable prepull.service" "bake: prepull.service enabled for the image's boots"
verify_layout "$OCI" v1
verify_layout "$OCI" 2

# ---- a bake with a missing image fails
cat >"$T/config.json" <<JSON
{"images": ["$REG_ADDR/team/app:v1", "$REG_ADDR/team/absent:1"], "store": "oci:$T/oci-bad"}
JSON
rm -rf "$T/out" && mkdir -p "$T/out"
SANDBOX_LOG_DIR=$T/out sandbox bash "$T/bake.sh"
assert_ne 0 "$(cat "$T/out/rc")" "packer build fails when an image is missing"
PL=$(cat "$T/out/packer.log")
assert_contains "$PL" "team/absent" "failed bake: the output names the missing image"
assert_contains "$PL" "prepull-bake: error: prepull exited 1" "failed bake: the provisioner says why the bake fails"
assert_not_contains "$PL" "Builds finished. The artifacts" "failed bake: no artifact"
