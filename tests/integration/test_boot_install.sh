#!/usr/bin/env bash
# Install and packaging: `cmake --install` puts the binary, the systemd unit and
# the man page in place; `cpack -G DEB` makes a .deb with the same files whose
# binary runs once extracted; installed for real with dpkg (in the overlay
# sandbox), `systemd-analyze verify` passes on prepull.service and on a workload
# ordered after it with the documented drop-in.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull
UNIT_SRC=$PREPULL_SRC/scripts/systemd/prepull.service
VERSION=$(sed -n 's/^project(prepull VERSION \([0-9.]*\).*/\1/p' "$PREPULL_SRC/CMakeLists.txt")
PREFIX=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD_DIR/CMakeCache.txt")
[ -n "$PREFIX" ] || cannot_run "no CMakeCache.txt in $BUILD_DIR"

# ---- the unit as shipped
u=$(cat "$UNIT_SRC")
for want in '^Type=oneshot$' '^RemainAfterExit=yes$' '^Wants=network-online.target$' \
  '^After=network-online.target containerd.service docker.service$' \
  '^ExecStart=/usr/bin/prepull pull --config /etc/prepull/config.json$'; do
  assert_contains "$u" "$want" "prepull.service has $want"
done
assert_eq "" "$(grep -E '^(Requires|BindsTo)=' "$UNIT_SRC" || true)" "prepull.service requires no runtime (works with docker or containerd)"

# ---- cmake --install
DESTDIR=$T/destdir cmake --install "$BUILD_DIR" >"$T/logs/install.log" 2>&1 || fail "cmake --install: $(tail -n 5 "$T/logs/install.log")"
R=$T/destdir$PREFIX
assert_file "$R/bin/prepull" "cmake --install: $PREFIX/bin/prepull"
assert_file "$R/lib/systemd/system/prepull.service" "cmake --install: $PREFIX/lib/systemd/system/prepull.service"
assert_file "$R/share/man/man1/prepull.1" "cmake --install: $PREFIX/share/man/man1/prepull.1"
assert_file "$R/share/doc/prepull/config.example.json" "cmake --install: an example config"
assert_contains "$(cat "$R/lib/systemd/system/prepull.service")" "^ExecStart=$PREFIX/bin/prepull pull --config /etc/prepull/config.json$" "the installed unit runs the installed binary"
jget "$R/share/doc/prepull/config.example.json" 'o["images"]' >/dev/null || fail "the example config is not JSON"
"$R/bin/prepull" pull --config "$R/share/doc/prepull/config.example.json" --store bogus:x >/dev/null 2>"$T/example.err" || true
assert_not_contains "$(cat "$T/example.err")" "config " "prepull accepts every key of the example config"
man_text=$(MANWIDTH=100 man -l "$R/share/man/man1/prepull.1" 2>&1)
assert_contains "$man_text" "prepull - pre-pull container images" "man page renders (NAME)"
assert_contains "$man_text" "CONFIGURATION FILE" "man page documents the config file"
assert_contains "$man_text" "EXIT STATUS" "man page documents exit codes"

# ---- cpack -G DEB
build_deb --fresh
contents=$(dpkg-deb -c "$DEB" | awk '{print $6}')
for f in "$PREFIX/bin/prepull" "$PREFIX/lib/systemd/system/prepull.service" "$PREFIX/share/man/man1/prepull.1"; do
  assert_contains "$contents" "^\.$f$" "the .deb contains $f"
done
assert_eq "prepull $VERSION" "$(dpkg-deb -f "$DEB" Package Version | awk -F': ' '{printf "%s%s", (NR>1?" ":""), $2}')" "the .deb is prepull $VERSION"
deps=$(dpkg-deb -f "$DEB" Depends)
for d in libcurl4 libjansson4 libzstd1 libarchive13; do
  assert_contains "$deps" "$d" "the .deb depends on $d"
done
dpkg-deb -x "$DEB" "$T/root"
assert_contains "$("$T/root$PREFIX/bin/prepull" --version)" "^prepull $VERSION " "prepull --version from the extracted .deb"

# ---- installed for real (sandbox), then systemd-analyze verify
command -v systemd-analyze >/dev/null || cannot_run "systemd-analyze not installed"
cat >"$T/verify.sh" <<EOF
set -u
dpkg -i "$DEB" >"$T/dpkg.log" 2>&1; echo \$? >"$T/dpkg.rc"
unit=\$(dpkg -L prepull | grep '/prepull.service\$')
systemd-analyze verify "\$unit" >"$T/verify.out" 2>&1; echo \$? >"$T/verify.rc"
# A workload ordered after prepull with the documented drop-in.
printf '[Unit]\nDescription=workload\n[Service]\nExecStart=/bin/true\n' >/etc/systemd/system/myapp.service
mkdir -p /etc/systemd/system/myapp.service.d
cp "\$(dpkg -L prepull | grep '/after-prepull.conf\$')" /etc/systemd/system/myapp.service.d/
systemd-analyze verify /etc/systemd/system/myapp.service >"$T/verify-app.out" 2>&1; echo \$? >"$T/verify-app.rc"
# The check has teeth: a unit whose ExecStart= binary is missing is refused.
sed 's#^ExecStart=/usr/bin/prepull #ExecStart=/usr/bin/prepull-missing #' "\$unit" >/etc/systemd/system/broken.service
systemd-analyze verify /etc/systemd/system/broken.service >"$T/verify-bad.out" 2>&1; echo \$? >"$T/verify-bad.rc"
EOF
sandbox bash "$T/verify.sh"
assert_eq 0 "$(cat "$T/dpkg.rc")" "dpkg -i installs the .deb"
assert_eq 0 "$(cat "$T/verify.rc")" "systemd-analyze verify prepull.service: $(head -c 300 "$T/verify.out")"
assert_eq "" "$(cat "$T/verify.out")" "systemd-analyze verify prints no warning"
assert_eq 0 "$(cat "$T/verify-app.rc")" "systemd-analyze verify of a workload with the after-prepull drop-in: $(head -c 300 "$T/verify-app.out")"
assert_ne 0 "$(cat "$T/verify-bad.rc")" "systemd-analyze verify refuses the unit when its binary is missing"
assert_eq "" "$(dpkg-query -W -f='${Status}' prepull 2>/dev/null | grep -o 'install ok installed' || true)" "the host's dpkg database is untouched"
