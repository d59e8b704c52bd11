#!/usr/bin/env bash
# A multi-arch index (linux/amd64, linux/arm64/v8, an attestation entry): the default
# platform is this machine's, --platform picks another, an absent one fails clearly.
source "$(dirname "$0")/lib.sh"
need_prepull

case $(uname -m) in
x86_64) HOST=linux/amd64 OTHER=linux/arm64 ;;
aarch64) HOST=linux/arm64 OTHER=linux/amd64 ;;
*) skip_all "machine $(uname -m) is neither amd64 nor arm64" ;;
esac

start_registry
mkimage "$T/src" multi --multiarch --attestation --layer busybox:gzip --layer random:zstd:2M:5
push_layout "$T/src" multi "$REG_ADDR/test/multi:1.0"
IDX=$(img_field multi 'o["digest"]')
M_HOST=$(img_field multi "o['platforms']['$HOST']['manifest']")
C_HOST=$(img_field multi "o['platforms']['$HOST']['config']")
M_OTHER=$(img_field multi "o['platforms']['$OTHER']['manifest']")
C_OTHER=$(img_field multi "o['platforms']['$OTHER']['config']")
L_OTHER=$(img_field multi "o['platforms']['$OTHER']['layers'][-1]")
L_HOST=$(img_field multi "o['platforms']['$HOST']['layers'][-1]")
ATT=$(img_field multi "o['platforms']['unknown/unknown']['manifest']")
REF=$REG_ADDR/test/multi:1.0

# The layout's entry may name the index (as containerd does) or the platform manifest.
check_platform() { # OCI PLATFORM MANIFEST CONFIG OWN_LAYER FOREIGN_CONFIG FOREIGN_LAYER
  local oci=$1 plat=$2 man=$3 cfg=$4 own=$5 fcfg=$6 flayer=$7
  local entry digest arch
  entry=$(index_entries "$oci")
  assert_eq 1 "$(printf '%s\n' "$entry" | grep -c .)" "$plat: one index entry"
  digest=${entry%% *}
  if [ "$digest" != "$IDX" ] && [ "$digest" != "$man" ]; then
    fail "$plat: index entry digest $digest is neither the index $IDX nor the $plat manifest $man"
  fi
  ok "$plat: index entry names the index or the $plat manifest"
  arch=${plat#linux/}
  verify_layout "$oci" 1.0 --override-os linux --override-arch "$arch"
  arch_seen=$(skopeo inspect --override-os linux --override-arch "$arch" "oci:$oci:1.0" | jget - 'o["Architecture"]')
  assert_eq "$arch" "$arch_seen" "$plat: skopeo sees architecture $arch"
  assert_file "$oci/blobs/sha256/${man#sha256:}" "$plat: manifest in the layout"
  assert_file "$oci/blobs/sha256/${cfg#sha256:}" "$plat: config in the layout"
  assert_file "$oci/blobs/sha256/${own#sha256:}" "$plat: its own layer in the layout"
  [ ! -e "$oci/blobs/sha256/${fcfg#sha256:}" ] || fail "$plat: the other platform's config was fetched"
  [ ! -e "$oci/blobs/sha256/${flayer#sha256:}" ] || fail "$plat: the other platform's layer was fetched"
  ok "$plat: nothing of the other platform was fetched"
  [ ! -e "$oci/blobs/sha256/${ATT#sha256:}" ] || fail "$plat: the attestation manifest was fetched"
  ok "$plat: attestation entry skipped"
  missing=$(layout_has_image "$oci" "$digest" "$plat")
  assert_eq "" "$missing" "$plat: every blob of the image is in the layout"
}

prepull_ok "default platform pull of $REF" pull --store "oci:$T/oci-default" --json "$REF"
res=$(json_events "$OUT" resolved)
assert_contains "$res" "\"platform\": \"$HOST" "default platform is this machine's ($HOST)"
check_platform "$T/oci-default" "$HOST" "$M_HOST" "$C_HOST" "$L_HOST" "$C_OTHER" "$L_OTHER"

prepull_ok "--platform $OTHER pull of $REF" pull --store "oci:$T/oci-other" --platform "$OTHER" --json "$REF"
res=$(json_events "$OUT" resolved)
assert_contains "$res" "\"platform\": \"$OTHER" "resolved event names $OTHER"
check_platform "$T/oci-other" "$OTHER" "$M_OTHER" "$C_OTHER" "$L_OTHER" "$C_HOST" "$L_HOST"

# Explicit variant.
prepull_ok "--platform linux/arm64/v8 pull" pull --store "oci:$T/oci-v8" --platform linux/arm64/v8 "$REF"
assert_file "$T/oci-v8/blobs/sha256/$(img_field multi "o['platforms']['linux/arm64']['config'][7:]")" "linux/arm64/v8: arm64 config in the layout"

run_prepull pull --store "oci:$T/oci-none" --platform linux/s390x "$REF"
assert_eq 1 "$RC" "platform not in the index exits 1"
assert_contains "$ERR" "s390x|platform" "the message names the missing platform"
assert_contains "$ERR" "test/multi" "the message names the image"
