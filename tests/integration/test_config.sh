#!/usr/bin/env bash
# prepull pull --config FILE: images and options from the JSON file, command-line
# options and images take precedence, clear exit-2 errors that name the key; with
# no image and no --config, /etc/prepull/config.json is read when it exists
# (checked in the overlay sandbox, so the host's /etc is untouched).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/boot_lib.sh"
need_prepull

start_registry
mkimage "$T/src" a --layer busybox:gzip --layer random:gzip:1M:1 --label a
push_layout "$T/src" a "$REG_ADDR/test/a:v1"
mkimage "$T/src" b --layer random:gzip:1M:2 --label b
push_layout "$T/src" b "$REG_ADDR/test/b:v2"
DA=$(img_field a 'o["digest"]')
DB=$(img_field b 'o["digest"]')

# ---- every image and option from the file
cat >"$T/c1.json" <<EOF
{
  "images": ["$REG_ADDR/test/a:v1", "$REG_ADDR/test/b:v2"],
  "store": "oci:$T/oci1",
  "state_dir": "$T/state1",
  "connections": 4,
  "chunk_size": "256K",
  "deadline": "5m",
  "ready_file": "$T/run/ready",
  "platform": "linux/amd64"
}
EOF
prepull_ok "pull --config with two images" pull --config "$T/c1.json" --json
assert_eq "store oci:$T/oci1" "$(json_events "$OUT" store | jget - '"store " + o["store"]')" "the store comes from the file"
assert_contains "$(index_entries "$T/oci1")" "^$DA v1 " "image a from the file is in the store"
assert_contains "$(index_entries "$T/oci1")" "^$DB v2 " "image b from the file is in the store"
assert_eq "$DA $DB" "$(jget "$T/run/ready" '" ".join(i["digest"] for i in o["images"])')" "ready_file from the file written with both digests"
assert_file "$T/state1" "state_dir from the file used"
verify_layout "$T/oci1" v1

# ---- the command line takes precedence: --store, and images replace the list
prepull_ok "command line overrides the file" pull --config "$T/c1.json" --store "oci:$T/oci2" "$REG_ADDR/test/b:v2"
entries=$(index_entries "$T/oci2")
assert_contains "$entries" "^$DB v2 " "--store on the command line wins over the file"
assert_eq 1 "$(printf '%s\n' "$entries" | grep -c .)" "images on the command line replace the file's list"
assert_eq "$DB" "$(jget "$T/run/ready" '" ".join(i["digest"] for i in o["images"])')" "the ready file names only the command-line image"

# ---- errors: exit 2, one message naming the file and the key
bad_config() { # JSON NEEDLE WHAT
  printf '%s\n' "$1" >"$T/bad.json"
  run_prepull pull --config "$T/bad.json" "$REG_ADDR/test/a:v1"
  assert_eq 2 "$RC" "$3: exit 2"
  assert_contains "$ERR" "config $T/bad.json: .*$2" "$3: the message names the file and the key (or where)"
}
bad_config '{"imagez": ["x"]}' 'unknown key "imagez"' "unknown key"
bad_config '{"chunk-size": "8M"}' 'did you mean "chunk_size"' "option spelling as a key"
bad_config '{"connections": "many"}' '"connections": expected an integer' "wrong type"
bad_config '{"deadline": "soon"}' '"deadline": expected a duration' "bad duration"
bad_config '{"images": "busybox"}' '"images": expected an array' "images not an array"
bad_config '{"store": "oci:/x",' 'line [0-9]+, column [0-9]+' "malformed JSON"
run_prepull pull --config "$T/nonexistent.json"
assert_eq 2 "$RC" "missing config file: exit 2"
assert_contains "$ERR" "$T/nonexistent.json" "missing config file: the message names it"
printf '{"store": "oci:%s/oci3"}\n' "$T" >"$T/noimg.json"
run_prepull pull --config "$T/noimg.json"
assert_eq 2 "$RC" "no image in the file nor on the command line: exit 2"
assert_contains "$ERR" "no image given" "no image: clear message"
run_prepull pull --config
assert_eq 2 "$RC" "--config without a path: exit 2"

# ---- connections, chunk_size, deadline and platform from the file take effect
# (counted by the fault server: concurrent requests, range sizes; exit 3 at the
# deadline; the manifest of the platform asked for, not this machine's)
case $(uname -m) in
x86_64) OTHER=linux/arm64 ;;
aarch64) OTHER=linux/amd64 ;;
*) cannot_run "machine $(uname -m) is neither amd64 nor arm64" ;;
esac
mkimage "$T/src" m --multiarch --layer random:none:6M:161 --label m
push_layout "$T/src" m "$REG_ADDR/test/m:v1"
M_OTHER=$(img_field m "o['platforms']['$OTHER']['manifest']")
SHARED=$(img_field m "o['platforms']['linux/amd64']['layers'][0]")
start_faultserver --rate $((128 * 1024)) # per connection: 3 x 128 KiB/s, 4 s a chunk
opts_file() { # FILE DEADLINE_JSON
  cat >"$1" <<JSON
{
  "images": ["$FS_ADDR/test/m:v1"],
  "store": "oci:$T/oci-opts",
  "state_dir": "$T/state-opts",
  "connections": 3,
  "chunk_size": "512K",
  $2
  "platform": "$OTHER"
}
JSON
}
opts_file "$T/c-opts.json" '"deadline": "2s",'
t0=$(date +%s.%N)
run_prepull pull --config "$T/c-opts.json"
secs=$(elapsed_since "$t0")
assert_eq 3 "$RC" "deadline 2s from the file: exit 3"
assert_contains "$ERR" "deadline reached; progress kept for the next run" "deadline from the file: says so"
assert_num "$(awk -v s="$secs" 'BEGIN { print (s >= 1.9 && s < 6) }')" -eq 1 "deadline from the file: stopped after about 2 s (${secs}s)"
settle
conc=$("$PY" - "$FS_LOG" <<'PYEOF'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
R = [r for r in L if r["method"] == "GET" and "/blobs/" in r["path"]]
ev = sorted([(r["t"], 1) for r in R] + [(r["t_end"], -1) for r in R], key=lambda e: (e[0], e[1]))
n = m = 0
for _, d in ev:
    n += d
    m = max(m, n)
print(m)
PYEOF
)
assert_eq 3 "$conc" "connections 3 from the file: at most 3 blob requests at once, and 3 were"
sizes=$(fs_query '" ".join(sorted(set(str(int(r["range"].split("-")[1]) - int(r["range"].split("=")[1].split("-")[0]) + 1) for r in L if r["method"] == "GET" and r["path"].endswith(A[0]) and r["range"])))' "$SHARED")
assert_eq 524288 "$sizes" "chunk_size 512K from the file: every range asked for is 512 KiB"
fs_rules '{"rules": [], "rate": 0}'
fs_reset_log
opts_file "$T/c-opts2.json" ""
prepull_ok "the same file without the deadline completes" pull --config "$T/c-opts2.json"
assert_contains "$(index_entries "$T/oci-opts")" "^($M_OTHER|$(img_field m 'o["digest"]')) v1 " "platform from the file: the image is in the store"
settle
assert_eq 1 "$(fs_query 'sum(1 for r in L if r["method"] == "GET" and r["path"].endswith("/manifests/" + A[0]))' "$M_OTHER")" \
  "platform $OTHER from the file: its manifest was fetched"
verify_layout "$T/oci-opts" v1 --override-os linux --override-arch "${OTHER#linux/}"
assert_eq "" "$(layout_has_image "$T/oci-opts" "$M_OTHER" "$OTHER")" "platform $OTHER from the file: its manifest, config and layers are in the store"

# ---- -q: only the summary line (and errors)
printf '{"images": ["%s"], "store": "oci:%s/oci4", "state_dir": "%s/state4"}\n' "$REG_ADDR/test/a:v1" "$T" "$T" >"$T/c4.json"
prepull_ok "pull --config -q" pull --config "$T/c4.json" -q
assert_eq 1 "$(printf '%s\n' "$ERR" | grep -c .)" "-q: one line on stderr"
assert_contains "$ERR" "^prepull: 1 image \(0 failed\)" "-q: that line is the summary"
run_prepull pull --config "$T/c4.json" -q "$REG_ADDR/test/absent:v1"
assert_eq 1 "$RC" "-q with a missing image: exit 1"
assert_eq 2 "$(printf '%s\n' "$ERR" | grep -c .)" "-q with a failure: the error line and the summary"
assert_contains "$ERR" "^prepull: error: .*test/absent" "-q: the error line names the image"

# ---- the default path, in the sandbox (its /etc is an overlay)
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  cat >"$T/default.sh" <<EOF
set -u
mkdir -p /etc/prepull
cat >/etc/prepull/config.json <<JSON
{"images": ["$REG_ADDR/test/b:v2"], "store": "oci:$T/oci-default", "state_dir": "$T/state-default"}
JSON
"$PREPULL" pull >"$T/default.out" 2>"$T/default.err"; echo \$? >"$T/default.rc"
"$PREPULL" pull --store "oci:$T/oci-explicit" --state-dir "$T/state-x" "$REG_ADDR/test/a:v1" >/dev/null 2>"$T/explicit.err"; echo \$? >"$T/explicit.rc"
"$PREPULL" status >"$T/status.out" 2>&1
echo '{"bogus": 1}' >/etc/prepull/config.json
"$PREPULL" pull >/dev/null 2>"$T/broken.err"; echo \$? >"$T/broken.rc"
EOF
  sandbox bash "$T/default.sh"
  assert_eq 0 "$(cat "$T/default.rc")" "'prepull pull' with no image reads /etc/prepull/config.json"
  assert_contains "$(cat "$T/default.err")" "reading /etc/prepull/config.json" "it says it read the default file"
  assert_contains "$(index_entries "$T/oci-default")" "^$DB v2 " "the default file's image is pulled into its store"
  assert_eq 0 "$(cat "$T/explicit.rc")" "with an image on the command line the default file is not read"
  assert_not_contains "$(cat "$T/explicit.err")" "reading /etc/prepull" "no mention of the default file then"
  assert_contains "$(cat "$T/status.out")" "$T/state-default" "'prepull status' uses the default file's state_dir"
  assert_eq 2 "$(cat "$T/broken.rc")" "a broken default file: exit 2"
  assert_contains "$(cat "$T/broken.err")" "config /etc/prepull/config.json: unknown key \"bogus\"" "a broken default file: the message names it and the key"
  [ ! -e /etc/prepull/config.json ] || [ "$(cat /etc/prepull/config.json)" != '{"bogus": 1}' ] || fail "the sandbox wrote to the host's /etc"
else
  cannot_run "the default-path checks need root and unshare (for a sandboxed /etc)"
fi
