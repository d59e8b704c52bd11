#!/usr/bin/env bash
# Oracle for the streaming layer applier (agent/unpack.c): a two-layer image
# whose top layer holds everything a layer can hold (whiteout of a lower file,
# an opaque directory over a lower one, a parent directory only the lower layer
# has, setuid/setgid binaries, a file capability, user xattrs, hardlinks,
# symlinks, a FIFO, device nodes, a PAX name over 100 bytes, a UTF-8 name, a
# sparse file, nanosecond mtimes, an empty directory with odd permissions and
# owners) is unpacked by containerd's own apply (`ctr images import`, overlayfs
# snapshotter) and by tests/unpack_tool (pp_unpack_* fed in random pieces).
# The two trees of each layer must be identical.
source "$(dirname "$0")/lib.sh"
source "$IT_DIR/containerd.sh"
export TZ=UTC0

TOOL=$(dirname "$PREPULL")/tests/unpack_tool
[ -x "$TOOL" ] || fail "unpack_tool not built next to prepull ($TOOL)"
command -v setcap >/dev/null || cannot_run "setcap is needed (libcap2-bin)"
ORACLE=("$PY" "$IT_DIR/unpack_oracle.py")

# ---------------------------------------------------------------- the layers
S1=$T/stage1
S2=$T/stage2
mkdir -p "$S1"/{etc,opq/sub,keep,bin} "$S2"
echo gone >"$S1/etc/gone"
echo stays >"$S1/etc/stays"
echo old1 >"$S1/opq/old1"
echo old2 >"$S1/opq/sub/old2"
echo base >"$S1/keep/base.txt"
chmod 0710 "$S1/keep"
chown 1000:1001 "$S1/keep"
setfattr -n user.origin -v lower "$S1/keep" 2>/dev/null ||
  "$PY" -c 'import os,sys; os.setxattr(sys.argv[1], "user.origin", b"lower")' "$S1/keep"
touch -d '2020-01-02 03:04:05.5' "$S1/keep" "$S1/opq" "$S1/etc"
LIST1=(etc etc/gone etc/stays opq opq/old1 opq/sub opq/sub/old2 keep keep/base.txt bin)

cd "$S2"
mkdir -p etc opq keep bin hard links dev long odd
: >etc/.wh.gone
: >opq/.wh..wh..opq
echo new >opq/new
echo newfile >keep/newfile
printf '#!/bin/sh\necho suid\n' >bin/suid && chmod 4755 bin/suid
printf 'sgid\n' >bin/sgid && chmod 2751 bin/sgid && chown 0:50 bin/sgid
printf 'cap\n' >bin/cap && chmod 0755 bin/cap && setcap cap_net_raw+ep bin/cap
echo hard >hard/a && ln hard/a hard/b && ln hard/a hard/c && chown 77:88 hard/a
ln -s ../bin/suid links/rel
ln -s /etc/passwd links/abs
ln -s nowhere links/dangling
mkfifo fifo && chmod 0640 fifo
mknod dev/char c 1 3 && mknod dev/block b 7 200 && chmod 0660 dev/block
LONG=long/$(printf 'n%.0s' $(seq 1 120))/$(printf 'f%.0s' $(seq 1 110)).txt
mkdir -p "$(dirname "$LONG")" && echo long >"$LONG"
UTF="ünïcode-名前.txt"
echo utf >"$UTF"
echo attr >xattr-file && "$PY" -c 'import os,sys; os.setxattr(sys.argv[1], "user.color", b"blue\x00\xff")' xattr-file
truncate -s 64M sparse && printf head | dd of=sparse conv=notrunc status=none &&
  printf middle | dd of=sparse bs=1 seek=$((32 << 20)) conv=notrunc status=none
echo owned >owned && chown 4242:4343 owned && chmod 0604 owned
chmod 1713 odd && chown 123:456 odd
touch -h -d '2021-02-03 04:05:06.123456789' bin/suid links/rel fifo odd "$UTF"
touch -d '2019-05-06 07:08:09.987654321' opq bin hard links dev long etc
cd - >/dev/null
LIST2=(etc etc/.wh.gone opq opq/.wh..wh..opq opq/new keep/newfile bin bin/suid bin/sgid bin/cap
  hard hard/a hard/b hard/c links links/rel links/abs links/dangling fifo dev dev/char dev/block
  long "$(dirname "$LONG")" "$LONG" "$UTF" xattr-file sparse
  owned odd)

mktar() { # STAGE OUT NAMES...
  local stage=$1 out=$2
  shift 2
  printf '%s\n' "$@" >"$out.list"
  tar --create --format=pax --numeric-owner --xattrs --xattrs-include='*' --sparse \
    --no-recursion -C "$stage" -f "$out" -T "$out.list" || fail "tar of $stage failed"
}
mktar "$S1" "$T/layer1.tar" "${LIST1[@]}"
mktar "$S2" "$T/layer2.tar" "${LIST2[@]}"
D1=sha256:$(sha256sum "$T/layer1.tar" | cut -d' ' -f1)
D2=sha256:$(sha256sum "$T/layer2.tar" | cut -d' ' -f1)
# Layer 1 as zstd in two frames; layer 2 as gzip in two members.
half=$(($(stat -c %s "$T/layer1.tar") / 2 + 123))
{ head -c "$half" "$T/layer1.tar" | zstd -q -c; tail -c +$((half + 1)) "$T/layer1.tar" | zstd -q -c; } >"$T/layer1.tar.zst"
half=$(($(stat -c %s "$T/layer2.tar") / 2 + 77))
{ head -c "$half" "$T/layer2.tar" | gzip -n -c; tail -c +$((half + 1)) "$T/layer2.tar" | gzip -n -c; } >"$T/layer2.tar.gz"
tar -tvf "$T/layer2.tar" >"$T/layer2.listing"
assert_contains "$(cat "$T/layer2.listing")" "GNUSparseFile|sparse" "layer 2 holds a sparse entry"

# ---------------------------------------------------------------- containerd
start_containerd
NAME=oracle.test/unpack:v1
"${ORACLE[@]}" oci-archive "$T/image.tar" "$NAME" \
  "$T/layer1.tar.zst:application/vnd.oci.image.layer.v1.tar+zstd:$D1" \
  "$T/layer2.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip:$D2"
ctr_ -n oracle images import "$T/image.tar" >"$T/logs/import.log" 2>&1 ||
  fail "ctr images import failed: $(tail -n 5 "$T/logs/import.log")"
C2=$("${ORACLE[@]}" chain "$D1" "$D2")
DIRS=$(snapshot_dirs oracle "$C2") || fail "containerd did not unpack the image (no snapshot $C2)"
log "$DIRS"
CTD1=$(sed -n 1p <<<"$DIRS")
CTD2=$(sed -n 2p <<<"$DIRS")
[ -d "$CTD2" ] && [ -d "$CTD1" ] && [ "$CTD1" != "$CTD2" ] ||
  fail "cannot find the two snapshot directories in: $DIRS"
ok "containerd unpacked both layers ($CTD1, $CTD2)"

# ---------------------------------------------------------------- ours
mkdir "$T/ours1" "$T/ours2"
OUT1=$("$TOOL" --diff-id "$D1" --random-pieces 1 --piece 9000 "$T/layer1.tar.zst" "$T/ours1" 2>&1) ||
  fail "unpack_tool layer 1: $OUT1"
OUT2=$("$TOOL" --diff-id "$D2" --lower "$T/ours1" --random-pieces 2 --piece 9000 \
  "$T/layer2.tar.gz" "$T/ours2" 2>&1) || fail "unpack_tool layer 2: $OUT2"
log "$OUT1"
log "$OUT2"
ok "pp_unpack applied both layers and checked their diffIDs"

# ---------------------------------------------------------------- compare
if CMP1=$("${ORACLE[@]}" compare "$CTD1" "$T/ours1" 2>&1); then
  ok "layer 1: identical trees ($(tail -n 1 <<<"$CMP1"))"
else
  fail "layer 1 differs from containerd's: $CMP1"
fi
# keep/ is created by both because the layer lacks it; files created in it
# afterwards move its mtime to "now", which differs between two runs.  A
# whiteout device keeps the time it was made at, in containerd too.
if CMP2=$("${ORACLE[@]}" compare "$CTD2" "$T/ours2" --no-mtime keep --no-mtime etc/gone 2>&1); then
  ok "layer 2: identical trees ($(grep compared <<<"$CMP2"))"
else
  fail "layer 2 differs from containerd's: $CMP2"
fi
log "$CMP2"

# ---------------------------------------------------------------- hostile
# A layer that tries to leave its root, over layer 1: containerd confines
# such names rather than refusing them, and so must we, to the same tree.
"${ORACLE[@]}" hostile-tar "$T/hostile.tar"
DH=sha256:$(sha256sum "$T/hostile.tar" | cut -d' ' -f1)
gzip -n -c "$T/hostile.tar" >"$T/hostile.tar.gz"
"${ORACLE[@]}" oci-archive "$T/image2.tar" oracle.test/hostile:v1 \
  "$T/layer1.tar.zst:application/vnd.oci.image.layer.v1.tar+zstd:$D1" \
  "$T/hostile.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip:$DH"
ctr_ -n oracle images import "$T/image2.tar" >"$T/logs/import2.log" 2>&1 ||
  fail "ctr images import of the hostile image failed: $(tail -n 5 "$T/logs/import2.log")"
CH=$("${ORACLE[@]}" chain "$D1" "$DH")
DIRS=$(snapshot_dirs oracle "$CH") || fail "no snapshot $CH"
CTDH=$(sed -n 2p <<<"$DIRS")
[ -d "$CTDH" ] && [ "$CTDH" != "$CTD1" ] || fail "no hostile snapshot directory in: $DIRS"
mkdir -p "$T/h/root"
echo precious >"$T/h/victim"
# Everything but the root's own contents (and its link count, which grows).
outside() { (cd "$T/h" && find . -path ./root -prune -o -printf '%p %y %s %n %T@\n' | sort); }
before=$(outside)
OUTH=$("$TOOL" --diff-id "$DH" --lower "$T/ours1" --random-pieces 3 --piece 300 \
  "$T/hostile.tar.gz" "$T/h/root" 2>&1) || fail "unpack_tool, hostile layer: $OUTH"
assert_eq "$before" "$(outside)" "nothing outside the root was touched"
assert_eq precious "$(cat "$T/h/victim")" "the file a symlink pointed at is intact"
# etc/ and sub/ are parents the layer lacks (their mtimes are "now" in both).
if CMPH=$("${ORACLE[@]}" compare "$CTDH" "$T/h/root" --no-mtime etc --no-mtime sub 2>&1); then
  ok "hostile layer: the same tree as containerd's ($(grep compared <<<"$CMPH"))"
else
  fail "hostile layer differs from containerd's: $CMPH"
fi
assert_eq "3" "$(cat "$T/h/root/up")" "a/../../../up confined to the root"

# The things the comparison is about are really there (so "identical" is not
# "both empty").
O2=$T/ours2
assert_eq "character special file 0:0 0 0:0" "$(stat -c '%F %t:%T %a %u:%g' "$O2/etc/gone")" \
  "whiteout device"
assert_eq y "$(getfattr --only-values -n trusted.overlay.opaque "$O2/opq" 2>/dev/null ||
  "$PY" -c 'import os,sys; print(os.getxattr(sys.argv[1], "trusted.overlay.opaque").decode())' "$O2/opq")" \
  "opaque marker on opq"
assert_eq 4755 "$(stat -c %a "$O2/bin/suid")" "setuid kept"
assert_contains "$(getcap "$O2/bin/cap")" "cap_net_raw[=+]ep" "file capability kept"
assert_eq 3 "$(stat -c %h "$O2/hard/a")" "hardlink group of three"
assert_eq "710 1000:1001" "$(stat -c '%a %u:%g' "$O2/keep")" "missing parent copied from the lower layer"
assert_eq "1713 123:456" "$(stat -c '%a %u:%g' "$O2/odd")" "odd directory"
assert_eq "fifo" "$(stat -c %F "$O2/fifo")" "FIFO"
assert_eq long "$(cat "$O2/$LONG")" "PAX long name"
blocks=$(stat -c %b "$O2/sparse")
assert_num "$blocks" -lt 1024 "sparse file stays sparse ($blocks blocks for 64 MiB)"
assert_eq "2021-02-03 04:05:06.123456789" "$(TZ=UTC0 stat -c %y "$O2/bin/suid" | cut -c1-29)" \
  "nanosecond mtime"
