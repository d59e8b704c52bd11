#!/usr/bin/env bash
# Limits a hostile manifest or a slip on the command line cannot get past:
#  - --max-image-size / config max_image_size: an image declaring more bytes than that
#    fails with one clear line before any layer is requested; the default (1T) and a
#    limit above the image let it through;
#  - NaN, infinities and hex are not durations or sizes: --stall-timeout nan (once
#    accepted: a NaN passes every range check), --give-up-after, --deadline,
#    --max-image-size, and the config keys, all exit 2 naming the option or key.
source "$(dirname "$0")/lib.sh"
need_prepull

for v in nan NaN inf -nan 0x10 1e3; do
  run_prepull pull --stall-timeout "$v" 127.0.0.1:1/x:1
  assert_eq 2 "$RC" "--stall-timeout $v: exit 2"
  assert_contains "$ERR" "--stall-timeout" "--stall-timeout $v: the message names the option"
done
for opt in --give-up-after --deadline; do
  run_prepull pull "$opt" nan 127.0.0.1:1/x:1
  assert_eq 2 "$RC" "$opt nan: exit 2"
  assert_contains "$ERR" "$opt" "$opt nan: the message names the option"
done
run_prepull pull --give-up-after 0.5s 127.0.0.1:1/x:1
assert_eq 2 "$RC" "--give-up-after below 1s: exit 2"
for v in nan inf 0 -5 12Q; do
  run_prepull pull --max-image-size "$v" 127.0.0.1:1/x:1
  assert_eq 2 "$RC" "--max-image-size $v: exit 2"
  assert_contains "$ERR" "--max-image-size" "--max-image-size $v: the message names the option"
done
for kv in '"stall_timeout": "nan"' '"give_up_after": "nan"' '"give_up_after": "inf"' '"max_image_size": "nan"' '"max_image_size": 0' '"chunk_size": "nanM"'; do
  echo "{\"images\": [\"127.0.0.1:1/x:1\"], $kv}" >"$T/bad.json"
  run_prepull pull --config "$T/bad.json"
  assert_eq 2 "$RC" "config {$kv}: exit 2"
  key=${kv%%:*}
  assert_contains "$ERR" "config $T/bad.json: $key" "config {$kv}: the message names the file and the key"
done
run_prepull prune --older-than nan --state-dir "$T/state"
assert_eq 2 "$RC" "prune --older-than nan: exit 2"
run_prepull pull --older-than 1h 127.0.0.1:1/x:1
assert_eq 2 "$RC" "--older-than is prune's: exit 2 for pull"

start_registry
mkimage "$T/src" v1 --layer random:none:6M:191 --layer random:none:5M:192
push_layout "$T/src" v1 "$REG_ADDR/test/limits:v1"
start_faultserver
REF=$FS_ADDR/test/limits:v1

run_prepull pull --store "oci:$T/oci1" --state-dir "$T/state" --max-image-size 10M "$REF"
assert_eq 1 "$RC" "an image above --max-image-size 10M: exit 1"
errl=$(printf '%s\n' "$ERR" | grep -i "error" | grep -F "test/limits" || true)
assert_ne "" "$errl" "one error line names the image"
assert_contains "$errl" "max-image-size" "the error names the limit"
assert_contains "$errl" "declares [0-9]+ bytes" "the error says what the image declares"
settle
layer_gets() {
  fs_query 'sum(1 for r in L if "/blobs/" in r["path"] and r["method"] == "GET" and r["path"].split("/")[-1] in A)' $(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])')
}
assert_eq 0 "$(layer_gets)" "no layer was requested"
assert_no_index_entry "$T/oci1" "max-image-size"

echo "{\"images\": [\"$REF\"], \"store\": \"oci:$T/oci2\", \"state_dir\": \"$T/state\", \"max_image_size\": \"10M\"}" >"$T/c.json"
run_prepull pull --config "$T/c.json"
assert_eq 1 "$RC" "config max_image_size 10M: exit 1"
assert_contains "$ERR" "max-image-size" "config max_image_size: the error names the limit"

prepull_ok "--max-image-size 12M lets an 11 MiB image through" pull --store "oci:$T/oci3" --state-dir "$T/state" --max-image-size 12M "$REF"
verify_layout "$T/oci3" v1
settle
assert_num "$(layer_gets)" -ge 2 "the layers were requested then"
prepull_ok "the default (1T) lets it through" pull --store "oci:$T/oci4" --state-dir "$T/state" "$REF"
