#!/usr/bin/env bash
# "A resume trusts nothing it has not re-read": the journal beside a partial blob is
# a list of claims.  Between two runs the test damages the state as a crash, a bad
# disk or a bug could: a byte flipped inside a chunk the journal calls done, a claim
# appended for a chunk whose bytes are not on disk, the journal's last line torn; and
# in a second state, a partial file cut short.  The next run must fetch again exactly
# the chunks whose claims do not hold (counted on the server) and commit the right
# blob.
source "$(dirname "$0")/lib.sh"
need_prepull

MIB=$((1024 * 1024))
start_registry
mkimage "$T/src" v1 --layer random:none:16M:97
push_layout "$T/src" v1 "$REG_ADDR/test/claims:v1"
BIG=$(img_field v1 'o["platforms"]["linux/amd64"]["layers"][0]')
SRC=$T/src/blobs/sha256/${BIG#sha256:}
BIG_SIZE=$(stat -c %s "$SRC")
start_faultserver
REF=$FS_ADDR/test/claims:v1

# stage STATE MODE — write STATE/partial/<hex>.partial and .journal by hand, as an
# earlier run with 1 MiB chunks would have left them, then damage them (MODE).
stage() {
  mkdir -p "$1/partial"
  "$PY" - "$SRC" "$BIG" "$1/partial/${BIG#sha256:}" "$2" <<'PYEOF'
import hashlib, sys
src, digest, base, mode = sys.argv[1:5]
data = bytearray(open(src, "rb").read())
CH = 1 << 20
n = (len(data) + CH - 1) // CH
dg = ["sha256:" + hashlib.sha256(bytes(data[i * CH:(i + 1) * CH])).hexdigest() for i in range(n)]
lines = ["prepull-journal 1 %s %d %d" % (digest, len(data), CH)]
if mode == "claims":
    # chunk 3: claimed done, one byte flipped on disk since
    data[3 * CH + 4321] ^= 0x01
    # chunk 7: never written (zeros), yet a claim for it is appended below
    data[7 * CH:8 * CH] = bytes(CH)
    lines += ["done %d %s" % (i, dg[i]) for i in range(n) if i not in (7, 9)]
    lines.append("done 7 %s" % dg[7])
    # chunk 9: bytes on disk are right, but its line was torn by the crash
    tail = "done 9 %s" % dg[9][:40]
    open(base + ".journal", "w").write("\n".join(lines) + "\n" + tail)
else:  # "short": every chunk done, then the file lost its last 5.5 MiB
    lines += ["done %d %s" % (i, dg[i]) for i in range(n)]
    open(base + ".journal", "w").write("\n".join(lines) + "\n")
    del data[len(data) - (11 * CH // 2):]
open(base + ".partial", "wb").write(data)
PYEOF
}

check_commit() { # STORE WHAT
  verify_layout "$1" v1
  cmp -s "$1/blobs/sha256/${BIG#sha256:}" "$SRC" || fail "$2: the committed blob differs from the pushed one"
  ok "$2: the committed blob is byte-identical to the pushed one"
  assert_eq "" "$(find "$T/state-$2" -name '*.partial' -o -name '*.journal' | head -n 3)" \
    "$2: no partial file or journal left"
}

# ---- flipped byte in a done chunk, a false claim, a torn last line
stage "$T/state-claims" claims
fs_reset_log
prepull_ok "resume from damaged claims" pull --store "oci:$T/oci-claims" --state-dir "$T/state-claims" \
  -j 4 --chunk-size 1M "$REF"
settle
check_commit "$T/oci-claims" claims
got=$(fs_blob_bytes "$BIG")
log "damaged claims: the server sent $got bytes of the blob"
assert_eq $((3 * MIB)) "$got" "damaged claims: exactly chunks 3 (flipped), 7 (false claim) and 9 (torn line) fetched again"
ranges=$(fs_query '" ".join(sorted(r["range"] for r in L if r["method"] == "GET" and r["path"].endswith(A[0])))' "$BIG")
assert_eq "bytes=3145728-4194303 bytes=7340032-8388607 bytes=9437184-10485759" "$ranges" \
  "damaged claims: the ranges asked for are those three chunks"
assert_contains "$ERR" "chunk 3 on disk does not match its journal" "damaged claims: the flipped chunk is reported"
assert_contains "$ERR" "chunk 7 on disk does not match its journal" "damaged claims: the false claim is reported"

# ---- a partial file cut short: not the file the journal describes; nothing in it is
# trusted, so the run starts the blob again (bounded by the blob) and commits it right
stage "$T/state-short" short
fs_reset_log
prepull_ok "resume from a truncated partial file" pull --store "oci:$T/oci-short" \
  --state-dir "$T/state-short" -j 4 --chunk-size 1M "$REF"
settle
check_commit "$T/oci-short" short
got=$(fs_blob_bytes "$BIG")
log "truncated partial: the server sent $got bytes of the blob"
assert_num "$got" -ge $((11 * MIB / 2)) "truncated partial: at least the lost 5.5 MiB fetched again"
assert_num "$got" -le "$BIG_SIZE" "truncated partial: at most the blob fetched again"
assert_contains "$ERR" "journal does not match the partial file" "truncated partial: prepull says why it starts over"
