#!/usr/bin/env bash
# Pull by digest; a well-formed digest the registry does not have fails.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" d1 --layer busybox:gzip --layer random:zstd:1M:11
push_layout "$T/src" d1 "$REG_ADDR/test/dig:d1"
D=$(img_field d1 'o["digest"]')
mkimage "$T/src" multi --multiarch --layer busybox:gzip
push_layout "$T/src" multi "$REG_ADDR/test/dig:multi"
IDX=$(img_field multi 'o["digest"]')

REF="$REG_ADDR/test/dig@$D"
prepull_ok "pull by digest $REF" pull --store "oci:$T/oci" --json "$REF"
entry=$(index_entries "$T/oci")
assert_eq 1 "$(printf '%s\n' "$entry" | grep -c .)" "one index entry"
assert_eq "$D" "${entry%% *}" "index entry has the pulled digest"
assert_contains "$entry" " $REG_ADDR/test/dig@$D " "io.containerd.image.name is the digest reference"
verify_layout "$T/oci" ""
assert_contains "$(json_events "$OUT" resolved)" "\"digest\": \"$D\"" "resolved event has the digest"

prepull_ok "pull by tag+digest (digest wins)" pull --store "oci:$T/oci2" "$REG_ADDR/test/dig:multi@$D"
assert_eq "$D" "$(index_entries "$T/oci2" | cut -d' ' -f1)" "tag+digest: entry has the digest, not the tag's target"

prepull_ok "pull an index by digest" pull --store "oci:$T/oci3" "$REG_ADDR/test/dig@$IDX"
verify_layout "$T/oci3" ""

WRONG=sha256:$(printf 'not-in-this-registry' | sha256sum | cut -d' ' -f1)
run_prepull pull --store "oci:$T/oci4" "$REG_ADDR/test/dig@$WRONG"
assert_eq 1 "$RC" "a digest not in the registry exits 1"
assert_contains "$ERR" "test/dig" "the message names the image"
assert_contains "$ERR" "manifest $WRONG not found in $REG_ADDR/test/dig" "the message says it was not found"
