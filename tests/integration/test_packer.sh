#!/usr/bin/env bash
# Packer, for both templates: the legacy JSON scripts/packer/prepull.json and the
# HCL2 scripts/packer/prepull.pkr.hcl (Packer 1.6.6, no packer init).
# `packer validate` accepts each (both builders), and a real build of the
# local one (`-only=local` for JSON, `-only=null.local` for HCL2: null builder,
# shell-local provisioner running scripts/packer/provision.sh) bakes against
# the loopback registry:
# the .deb is installed with apt-get, the images land in the store, the state
# dir is left without partial downloads, the unit is enabled. A bake whose
# config names a missing image fails (packer exits non-zero). Builds run in the
# overlay sandbox, so the host's /etc, /usr and /var are untouched.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull
command -v packer >/dev/null || cannot_run "packer not installed (scripts/deps.sh installs it)"
JSON_TEMPLATE=$PREPULL_SRC/scripts/packer/prepull.json
HCL_TEMPLATE=$PREPULL_SRC/scripts/packer/prepull.pkr.hcl
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
for TEMPLATE in "$JSON_TEMPLATE" "$HCL_TEMPLATE"; do
  kind=${TEMPLATE##*/}
  out=$(packer validate "${VARS[@]}" -var do_api_token=dummy-token "$TEMPLATE" 2>&1) ||
    fail "packer validate $kind: $out"
  ok "packer validate accepts $kind (digitalocean + local builders)"
  if packer validate "${VARS[@]}" -var do_api_token=x -var prepull_deb=$T/nope.deb "$TEMPLATE" >"$T/logs/validate-bad.log" 2>&1; then
    fail "packer validate accepted $kind whose .deb does not exist"
  fi
  ok "packer validate refuses a missing .deb ($kind)"
done

# ---- a real bake (null builder, shell-local)
cat >"$T/bake.sh" <<BAKE
set -u
rc=0
packer build "\$1" ${VARS[*]} "\$2" >"$T/out/packer.log" 2>&1 || rc=\$?
echo \$rc >"$T/out/rc"
ls -A /var/lib/prepull >"$T/out/state-dir" 2>&1
/usr/bin/prepull status >"$T/out/status" 2>&1
ls /run/prepull/ready >"$T/out/ready" 2>&1
dpkg-query -W -f='\${Status}' prepull >"$T/out/dpkg" 2>&1
cp /etc/prepull/config.json "$T/out/config.json"
BAKE
for build in "-only=local $JSON_TEMPLATE" "-only=null.local $HCL_TEMPLATE"; do
  read -r only TEMPLATE <<<"$build"
  kind=${TEMPLATE##*/}
  rm -rf "$T/out" "$OCI" && mkdir -p "$T/out"
  SANDBOX_LOG_DIR=$T/out sandbox bash "$T/bake.sh" "$only" "$TEMPLATE"
  sed 's/^/#   packer: /' "$T/out/packer.log" | grep -E 'prepull-bake|Error|error' | head -n 20
  assert_eq 0 "$(cat "$T/out/rc")" "$kind: packer build $only exits 0"
  PL=$(cat "$T/out/packer.log")
  assert_contains "$PL" "prepull-bake: installing prepull_" "$kind bake: the .deb is installed"
  assert_contains "$PL" "prepull-bake: $REG_ADDR/team/app:v1 $(img_field app 'o["digest"]')" "$kind bake: app image verified with its digest"
  assert_contains "$PL" "prepull-bake: $REG_ADDR/team/side:2 $(img_field side 'o["digest"]')" "$kind bake: side image verified with its digest"
  assert_contains "$PL" "Builds finished. The artifacts of successful builds are" "$kind: packer reports a finished build"
  assert_eq "install ok installed" "$(cat "$T/out/dpkg")" "$kind bake: prepull is installed in the image"
  cmp -s "$T/config.json" "$T/out/config.json" || fail "$kind bake: /etc/prepull/config.json differs from the given config"
  ok "$kind bake: /etc/prepull/config.json is the given config"
  assert_contains "$(cat "$T/out/status")" "^no partial downloads" "$kind bake: prepull status finds no partial downloads"
  assert_not_contains "$(cat "$T/out/state-dir")" "partial" "$kind bake: no partial/ left in the state dir"
  assert_contains "$(cat "$T/out/ready")" "No such file" "$kind bake: no ready file left in the image"
  assert_contains "$(cat "$T/out/systemctl.log")" "^systemctl enable prepull.service" "$kind bake: prepull.service enabled for the image's boots"
  verify_layout "$OCI" v1
  verify_layout "$OCI" 2
done

# ---- a bake with a missing image fails
cat >"$T/config.json" <<JSON
{"images": ["$REG_ADDR/team/app:v1", "$REG_ADDR/team/absent:1"], "store": "oci:$T/oci-bad"}
JSON
for build in "-only=local $JSON_TEMPLATE" "-only=null.local $HCL_TEMPLATE"; do
  read -r only TEMPLATE <<<"$build"
  kind=${TEMPLATE##*/}
  rm -rf "$T/out" && mkdir -p "$T/out"
  SANDBOX_LOG_DIR=$T/out sandbox bash "$T/bake.sh" "$only" "$TEMPLATE"
  assert_ne 0 "$(cat "$T/out/rc")" "$kind: packer build fails when an image is missing"
  PL=$(cat "$T/out/packer.log")
  assert_contains "$PL" "team/absent" "$kind failed bake: the output names the missing image"
  assert_contains "$PL" "prepull-bake: error: prepull exited 1" "$kind failed bake: the provisioner says why the bake fails"
  assert_not_contains "$PL" "Builds finished. The artifacts" "$kind failed bake: no artifact"
done
