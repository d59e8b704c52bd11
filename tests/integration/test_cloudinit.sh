#!/usr/bin/env bash
# cloud-init user-data in cloud-init/: `cloud-init schema` accepts each file, and
# each is executed for real by cloud-init's boot stages (init --local, init,
# modules config, modules final) against a NoCloud seed, inside a sandbox (overlay /etc /usr
# /var, tmpfs /run, a logging systemctl). The user-data installs the .deb built
# from this tree with apt-get, writes /etc/prepull/config.json, enables and
# starts prepull.service (the stub runs its ExecStart=), then starts the
# workload. The only edits: registry host -> the loopback test registry, .deb
# URL -> a loopback HTTP server, store -> an OCI layout in the test dir (no
# Docker/containerd daemon in the sandbox).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull
command -v cloud-init >/dev/null || cannot_run "cloud-init not installed (scripts/deps.sh installs it)"
CI_DIR=$PREPULL_SRC/cloud-init

# ---- schema
for f in "$CI_DIR"/docker-vm.yaml "$CI_DIR"/k8s-gpu-node.yaml; do
  out=$(cloud-init schema --config-file "$f" 2>&1) || fail "cloud-init schema rejects $(basename "$f"): $out"
  assert_contains "$out" "^Valid cloud-config" "cloud-init schema accepts $(basename "$f")"
done
# The check has teeth: a misspelt key in write_files is refused.
sed 's/permissions:/permission:/' "$CI_DIR/docker-vm.yaml" >"$T/bad.yaml"
if cloud-init schema --config-file "$T/bad.yaml" >"$T/logs/schema-bad.log" 2>&1; then
  fail "cloud-init schema accepted a user-data with a misspelt key"
fi
ok "cloud-init schema refuses a misspelt write_files key"

sandbox_check
build_deb
mkdir -p "$T/www"
cp "$DEB" "$T/www/prepull.deb"
serve_dir "$T/www"
DEB_URL_IN_USERDATA=https://downloads.example.com/prepull/prepull_0.1.0_amd64.deb

start_registry
mkimage "$T/src" app --layer busybox:gzip --layer random:gzip:3M:1 --label app
push_layout "$T/src" app "$REG_ADDR/team/app:v1"
mkimage "$T/src" inf --layer busybox:gzip --layer random:zstd:4M:2 --label inference
push_layout "$T/src" inf "$REG_ADDR/ml/inference:v1"
mkimage "$T/src" dcgm --layer random:gzip:1M:3 --label dcgm
push_layout "$T/src" dcgm "$REG_ADDR/ml/dcgm-exporter:3"

# run_userdata NAME USERDATA STORE_FROM STORE_TO — seed the sandbox with the
# edited user-data, run cloud-init's modules, copy what it left to $T/out-NAME.
run_userdata() {
  local name=$1 src=$2 from=$3 to=$4
  local ud=$T/ud-$name.yaml out=$T/out-$name
  sed -e "s#registry.example.com#$REG_ADDR#g" -e "s#$DEB_URL_IN_USERDATA#$SERVE_URL/prepull.deb#" \
    -e "s#\"store\": \"$from\"#\"store\": \"$to\"#" "$src" >"$ud"
  grep -q "$SERVE_URL/prepull.deb" "$ud" || fail "$name: the .deb URL was not found in the user-data"
  mkdir -p "$out"
  cat >"$T/inner-$name.sh" <<EOF
set -u
mkdir -p /var/lib/cloud/seed/nocloud /etc/cloud/cloud.cfg.d
# The boot stages run as on a VM, but only with the modules this user-data
# uses: growpart, resizefs or mounts would act on this machine's real disk.
cat >/etc/cloud/cloud.cfg.d/99-prepull-test.cfg <<'CFG'
datasource_list: [ NoCloud, None ]
network: {config: disabled}
preserve_hostname: true
manage_etc_hosts: false
cloud_init_modules: [write_files]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts_user]
CFG
cp "$ud" /var/lib/cloud/seed/nocloud/user-data
printf 'instance-id: prepull-test-$name\nlocal-hostname: prepull-test\n' >/var/lib/cloud/seed/nocloud/meta-data
# A node image has kubelet installed (its unit only; the stub does not run it).
[ "$name" != k8s ] || printf '[Service]\nExecStart=/bin/true\n' >/lib/systemd/system/kubelet.service
rc=0
for stage in "init --local" init "modules --mode config" "modules --mode final"; do
  echo "== cloud-init \$stage (\$(date +%s.%N))" >>"$out/cloud-init.log"
  cloud-init \$stage >>"$out/cloud-init.log" 2>&1 || { echo "stage \$stage failed" >>"$out/cloud-init.log"; rc=1; }
done
echo "== done (\$(date +%s.%N))" >>"$out/cloud-init.log"
cloud-init status --long >"$out/status" 2>&1
cp /etc/prepull/config.json "$out/" 2>/dev/null
cp /run/prepull/ready "$out/ready" 2>/dev/null
dpkg-query -W -f='\${Status} \${Version}\n' prepull >"$out/dpkg-status" 2>&1
/usr/bin/prepull --version >"$out/version" 2>&1
find /etc/systemd/system -type f >"$out/units" 2>/dev/null
cp /var/log/cloud-init-output.log "$out/" 2>/dev/null
exit \$rc
EOF
  local start
  start=$(date +%s.%N)
  SANDBOX_LOG_DIR=$out sandbox bash "$T/inner-$name.sh" || {
    tail -n 30 "$out/cloud-init.log" | sed 's/^/#   /'
    fail "$name: cloud-init modules failed"
  }
  log "$name: cloud-init ran in $(elapsed_since "$start") s"
}

# ---- (a) Docker VM
OCI_A=$T/oci-docker
run_userdata docker "$CI_DIR/docker-vm.yaml" docker "oci:$OCI_A"
O=$T/out-docker
ok "docker-vm.yaml: cloud-init init --local, init, modules config and final ran"
assert_contains "$(cat "$O/status")" "^status: done" "docker-vm: cloud-init status: done"
assert_file "$O/config.json" "docker-vm: /etc/prepull/config.json written"
assert_eq "$REG_ADDR/team/app:v1" "$(jget "$O/config.json" '",".join(o["images"])')" "docker-vm: config lists the workload image"
assert_eq "15m /run/prepull/ready" "$(jget "$O/config.json" 'o["deadline"] + " " + o["ready_file"]')" "docker-vm: config has a deadline and a ready file"
assert_contains "$(cat "$O/dpkg-status")" "^install ok installed 0\.1" "docker-vm: the .deb is installed (apt-get)"
assert_contains "$(cat "$O/version")" "^prepull [0-9]" "docker-vm: /usr/bin/prepull runs"
assert_contains "$(cat "$O/units")" "/etc/systemd/system/app.service" "docker-vm: the workload unit is written"
SL=$(cat "$O/systemctl.log")
assert_contains "$SL" "^systemctl enable --now prepull.service" "docker-vm: prepull.service enabled and started"
assert_contains "$SL" "^unit prepull.service: exited 0" "docker-vm: prepull.service (ExecStart=) exited 0"
# The workload is started after prepull has finished.
order=$(grep -n -E '^unit (prepull|app)\.service' "$O/systemctl.log" | cut -d: -f2- | tr '\n' '|')
assert_eq "unit prepull.service: exited 0|unit app.service: started (not run in the sandbox)|" "$order" "docker-vm: the workload starts after prepull"
assert_contains "$(cat "$O/systemctl.prepull.service.err")" "^prepull: store oci:$OCI_A" "docker-vm: prepull logged to stderr (journald)"
verify_layout "$OCI_A" v1
assert_eq "$(img_field app 'o["digest"]')" "$(jget "$O/ready" 'o["images"][0]["digest"]')" "docker-vm: ready file names the image digest"

# ---- (b) Kubernetes GPU node (containerd, k8s.io)
OCI_B=$T/oci-k8s
run_userdata k8s "$CI_DIR/k8s-gpu-node.yaml" containerd "oci:$OCI_B"
O=$T/out-k8s
ok "k8s-gpu-node.yaml: cloud-init's four stages ran"
assert_contains "$(cat "$O/status")" "^status: done" "k8s: cloud-init status: done"
assert_eq "k8s.io" "$(jget "$O/config.json" 'o["namespace"]')" "k8s: config has namespace k8s.io"
assert_eq 2 "$(jget "$O/config.json" 'len(o["images"])')" "k8s: config lists two images"
assert_contains "$(cat "$O/units")" "kubelet.service.d/20-prepull.conf" "k8s: kubelet drop-in written"
SL=$(cat "$O/systemctl.log")
assert_contains "$SL" "^unit prepull.service: exited 0" "k8s: prepull.service exited 0"
order=$(grep -n -E '^unit (prepull|kubelet)\.service' "$O/systemctl.log" | cut -d: -f2- | tr '\n' '|')
assert_eq "unit prepull.service: exited 0|unit kubelet.service: started (not run in the sandbox)|" "$order" "k8s: kubelet is started after prepull"
entries=$(index_entries "$OCI_B")
assert_contains "$entries" "$REG_ADDR/ml/inference:v1" "k8s: inference image pulled"
assert_contains "$entries" "$REG_ADDR/ml/dcgm-exporter:3" "k8s: dcgm-exporter image pulled"
verify_layout "$OCI_B" v1
assert_eq 2 "$(jget "$O/ready" 'len(o["images"])')" "k8s: ready file lists both images"

# Nothing leaked to the host.
assert_eq "" "$(dpkg-query -W -f='${Status}' prepull 2>/dev/null | grep -o 'install ok installed' || true)" "the host's dpkg database does not have prepull"
