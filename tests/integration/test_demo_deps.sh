#!/usr/bin/env bash
# The demo installs only what it needs (scripts/deps.sh --demo) and leaves the
# machine's services as it found them.
# 1. The demo's package list holds no cloud-init; the test set holds all of it,
#    and tmux.
# 2. What apt would install for the demo on a minimal Debian 12 (the packages of
#    priority required/important, computed from this machine's dpkg status):
#    no cloud-init, and no package that ships a service, socket, timer, init
#    script or cron job except docker-registry (and containernetworking-plugins,
#    whose units are enabled only when they were installed before).
# 3. A real run from a machine without docker-registry, in the overlay sandbox
#    (the host's /etc, /usr, /var are untouched), with no policy-rc.d and in
#    runlevel 2, so that installing docker-registry enables and starts its
#    service as on a real machine: scripts/demo.sh works, says it stopped and disabled that service,
#    and afterwards no service is enabled and no daemon runs that did not before.
#    systemd is not PID 1 on the machines this was written on (nor in the
#    sandbox): "enabled" is then the /etc/systemd/system/*.wants and
#    /etc/rc[2-5].d/S* links, "running" the processes whose parent is PID 1
#    (daemons detach to init) running a program from the demo's packages. When
#    systemd is PID 1 on the host, its `systemctl list-unit-files
#    --state=enabled` and running units are compared around the run as well.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull
DEPS=$PREPULL_SRC/scripts/deps.sh

# ---- 1. the lists
mapfile -t DEMO < <(bash "$DEPS" --demo --list)
mapfile -t FULL < <(bash "$DEPS" --test --list)
assert_num "${#DEMO[@]}" -gt 5 "deps.sh --demo --list names the demo's packages"
demo_list=" ${DEMO[*]} " full_list=" ${FULL[*]} "
for p in cloud-init nginx containerd docker.io packer; do
  assert_not_contains "$demo_list" " $p " "the demo's list holds no $p"
done
assert_contains "$demo_list" " docker-registry " "the demo's list holds docker-registry (the demo runs it)"
missing=""
for p in "${DEMO[@]}"; do [[ $full_list == *" $p "* ]] || missing+=" $p"; done
assert_eq "" "$missing" "the test set holds every package of the demo set"
assert_contains "$full_list" " tmux " "the test set holds tmux"

# ---- 2. what apt would add to a minimal Debian 12
"$PY" - /var/lib/dpkg/status "$T/min-status" <<'EOF'
import re, sys
stanzas, by_name, provides = {}, {}, {}
for para in open(sys.argv[1]).read().split("\n\n"):
    f = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, re.M))
    if not f.get("Package") or not f.get("Status", "").endswith(" installed"):
        continue
    stanzas[f["Package"]] = para.strip()
    by_name[f["Package"]] = f
    for p in f.get("Provides", "").split(","):
        p = p.split("(")[0].strip()
        if p:
            provides.setdefault(p, f["Package"])
def installed(name):
    name = name.split(":")[0]
    return name if name in by_name else provides.get(name)
todo = [n for n, f in by_name.items() if f.get("Priority") in ("required", "important")]
base = set()
while todo:
    n = todo.pop()
    if n in base:
        continue
    base.add(n)
    for field in ("Depends", "Pre-Depends"):
        for group in by_name[n].get(field, "").split(","):
            for alt in group.split("|"):
                m = installed(alt.split("(")[0].strip())
                if m:
                    todo.append(m)
                    break
open(sys.argv[2], "w").write("\n\n".join(stanzas[n] for n in sorted(base)) + "\n")
EOF
bash "$DEPS" --demo --simulate "$T/min-status" >"$T/logs/simulate.log" 2>&1 ||
  fail "apt-get -s for the demo's packages failed: $(tail -n 5 "$T/logs/simulate.log")"
mapfile -t ADDED < <(awk '/^Inst /{print $2}' "$T/logs/simulate.log")
log "on a minimal Debian 12 the demo installs ${#ADDED[@]} packages"
assert_num "${#ADDED[@]}" -ge "${#DEMO[@]}" "apt-get -s lists what the demo installs"
assert_not_contains " ${ADDED[*]} " " cloud-init " "nothing the demo installs pulls in cloud-init"
daemons="" unknown=""
for p in "${ADDED[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
    unknown+=" $p"
    continue
  fi
  units=$(dpkg -L "$p" | grep -E '^(/usr)?/lib/systemd/system/[^/]+\.(service|socket|timer|path)$|^/etc/init\.d/.|^/etc/cron\.[a-z]+/.' || true)
  [ -n "$units" ] || continue
  case $p in
  docker-registry) ;;
  containernetworking-plugins)
    grep -q "deb-systemd-helper debian-installed" "/var/lib/dpkg/info/$p.postinst" ||
      daemons+=" $p(enables its units on a fresh install)"
    ;;
  *) daemons+=" $p($(echo $units | tr ' ' ','))" ;;
  esac
done
assert_eq "" "$unknown" "every package the demo would install is installed here, so its files can be checked"
assert_eq "" "$daemons" "no daemon, timer or cron job beyond docker-registry among what the demo installs"

# ---- 3. the demo, on a machine without docker-registry
REAL_SYSTEMCTL=$(command -v systemctl || true)
[ -n "$REAL_SYSTEMCTL" ] && cp "$REAL_SYSTEMCTL" "$T/systemctl.real"
PORT=$(free_port)
if [ "$(cat /proc/1/comm)" = systemd ] && [ -d /run/systemd/system ]; then
  SYSTEMD=1
  log "systemd is PID 1 here: comparing systemctl's enabled unit files and running units as well"
  systemctl list-unit-files --state=enabled --no-legend | awk '{print $1}' | sort >"$T/host-enabled.before"
  systemctl list-units --state=running --no-legend --plain | awk '{print $1}' | sort >"$T/host-running.before"
else
  SYSTEMD=0
  log "systemd is not PID 1 here (PID 1 is $(cat /proc/1/comm)): comparing *.wants and rc links, and daemon processes"
fi
# Files of the demo's packages: a daemon the demo leaves behind runs one of them.
for p in "${ADDED[@]}"; do dpkg -L "$p" 2>/dev/null; done | sort -u >"$T/demo-files"

mkdir -p "$T/out"
cat >"$T/run.sh" <<RUN
set -u
out=$T/out
# State of the services: enabled = links, running = detached daemons from the demo's packages.
snapshot() {
  { find /etc/systemd/system -path '*.wants/*' -printf '%p -> %l\n' 2>/dev/null
    ls -1d /etc/rc[2345].d/S* 2>/dev/null; } | sort >"\$out/enabled.\$1"
  for d in /proc/[0-9]*; do
    [ "\$(awk '/^PPid:/ {print \$2}' "\$d/status" 2>/dev/null)" = 1 ] || continue
    exe=\$(readlink "\$d/exe" 2>/dev/null) || continue
    grep -qxF "\$exe" "$T/demo-files" && echo "\${d#/proc/} \$exe"
  done | sort -k2 >"\$out/running.\$1"
  return 0
}
# A machine without docker-registry, where installing a package starts its service.
dpkg --purge docker-registry >"\$out/purge.log" 2>&1 || { echo "purge failed" >"\$out/rc"; exit; }
rm -f /usr/sbin/policy-rc.d
# Without systemd, invoke-rc.d starts a package's service only in a runlevel.
rm -f /sbin/runlevel && printf '#!/bin/sh\necho N 2\n' >/sbin/runlevel && chmod 755 /sbin/runlevel
echo "export REGISTRY_HTTP_ADDR=127.0.0.1:$PORT" >/etc/default/docker-registry
[ -f "$T/systemctl.real" ] && install -m 0755 "$T/systemctl.real" /usr/bin/systemctl
snapshot before
rc=0
PREPULL=$PREPULL DEMO_SIZE=2M DEMO_OUT=$T/demo bash "$PREPULL_SRC/scripts/demo.sh" >"\$out/demo.log" 2>&1 || rc=\$?
echo \$rc >"\$out/rc"
snapshot after
dpkg-query -W -f='\${Status}' docker-registry >"\$out/dpkg" 2>&1
cat /run/docker-registry.pid >"\$out/service-pid" 2>/dev/null
# The pid must still be the system service's registry (its config under /etc), not a
# number another test's process got since.
spid=\$(cat /run/docker-registry.pid 2>/dev/null || true)
if [ -n "\$spid" ] && tr '\\0' ' ' </proc/"\$spid"/cmdline 2>/dev/null | grep -q /etc/docker/registry; then
  echo alive >"\$out/service-alive"
else
  echo gone >"\$out/service-alive"
fi
/etc/init.d/docker-registry status >"\$out/service-status" 2>&1
exit 0
RUN
SANDBOX_LOG_DIR=$T/out sandbox bash "$T/run.sh"
# Whatever the outcome, a registry the install started is ours to stop.
spid=$(cat "$T/out/service-pid" 2>/dev/null || true)
if [ -n "$spid" ] && kill -0 "$spid" 2>/dev/null; then
  PIDS+=("$spid")
fi

sed 's/^/#   demo: /' "$T/out/demo.log" | grep -E 'deps:|==>|stored as|size|rror' | head -n 30
if [ "$(cat "$T/out/rc")" != 0 ]; then
  echo "# the demo's last lines:"
  tail -n 25 "$T/out/demo.log" | sed 's/^/#   demo: /'
fi
assert_eq 0 "$(cat "$T/out/rc")" "scripts/demo.sh exits 0 on a machine without docker-registry"
DL=$(cat "$T/out/demo.log")
assert_contains "$DL" "deps: installing .*docker-registry" "the demo installed docker-registry"
assert_eq "install ok installed" "$(cat "$T/out/dpkg")" "docker-registry is installed afterwards"
assert_contains "$DL" "installing docker-registry started its system service; stopping it" \
  "the install started the registry's service, and the demo stopped it"
assert_contains "$DL" "installing docker-registry enabled its system service; disabling it" \
  "the install enabled the registry's service, and the demo disabled it"
assert_contains "$DL" "stored as 127\.0\.0\.1:[0-9]+/demo/app:latest" "the demo pulled its image with prepull"
assert_eq "" "$(comm -13 "$T/out/enabled.before" "$T/out/enabled.after")" \
  "after the demo, no service is enabled that was not before"
assert_eq "" "$(join -v2 -1 2 -2 2 "$T/out/running.before" "$T/out/running.after")" \
  "after the demo, no daemon from its packages runs that did not before"
# The init script's own status falls back to looking for any docker-registry process
# when its pidfile is gone, and other tests run private registries meanwhile: judge by
# the pid the service wrote, looked at inside the sandbox when the demo was over.
assert_eq gone "$(cat "$T/out/service-alive" 2>/dev/null)" \
  "the registry's system service no longer runs when the demo is over"
if [ "$SYSTEMD" = 1 ]; then
  systemctl list-unit-files --state=enabled --no-legend | awk '{print $1}' | sort >"$T/host-enabled.after"
  systemctl list-units --state=running --no-legend --plain | awk '{print $1}' | sort >"$T/host-running.after"
  assert_eq "" "$(comm -13 "$T/host-enabled.before" "$T/host-enabled.after")" "systemd: no unit file newly enabled"
  assert_eq "" "$(comm -13 "$T/host-running.before" "$T/host-running.after")" "systemd: no unit newly running"
fi
