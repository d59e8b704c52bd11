#!/usr/bin/env bash
# Mirrors from containerd's hosts.toml (--hosts-dir), and what happens when one fails.
# A real registry, fronted by two fault servers: UP is the registry as prepull knows it
# (the image is UP_ADDR/...), MIR is a mirror of it.  The hosts.toml of UP_ADDR lists a
# dead port first, then MIR.  Asserted from the servers' own request logs:
#   - a mirror that is down hands everything to the next one: the blobs come from MIR
#     and UP at once (every source of a blob serves a share of its chunks), each byte
#     once, and every request to MIR carries ?ns=UP_ADDR;
#   - MIR answering 404, 503 and 429 for one blob each: each of those blobs comes from
#     UP, whole, the other blobs still from MIR, and the pull succeeds;
#   - MIR over its rate limit (429 with RateLimit-* headers) for the tag: the message
#     names the limit, the tag is resolved at UP;
#   - MIR flipping a byte in one chunk: the layer commits, MIR is named (stderr, and a
#     --json source_dropped event), UP serves the layer at most 1.1 times;
#   - MIR ignoring Range for a layer (a pull-through cache filling it): with
#     --cache-fill bypass UP carries the layer meanwhile; by default (wait) the layer
#     waits for MIR, which serves it whole once it answers ranges, UP none of it;
#   - MIR sending a config that does not hash to its digest: it comes from UP;
#   - MIR without "resolve": the tag is resolved at UP only, the blobs come from MIR;
#   - --mirror HOST=URL, or the config's "mirrors", put a mirror first without any
#     hosts.toml; malformed ones are usage errors;
#   - a mirror with Basic credentials of its own in config.json is used with them;
#     without them it refuses (401) and the registry serves;
#   - a malformed hosts.toml fails the pull with the file and line named.
source "$(dirname "$0")/lib.sh"
need_prepull

start_registry
mkimage "$T/src" v1 --layer random:gzip:1M:1 --layer random:gzip:1M:2 \
  --layer random:gzip:1M:3 --layer random:gzip:1M:4
LAYERS=($(img_field v1 '" ".join(o["platforms"]["linux/amd64"]["layers"])'))
size_of() { stat -c %s "$T/src/blobs/sha256/${1#sha256:}"; }

start_faultserver --log "$T/logs/up.jsonl"
UP_ADDR=$FS_ADDR UP_URL=$FS_URL UP_LOG=$T/logs/up.jsonl
start_faultserver --log "$T/logs/mirror.jsonl"
MIR_ADDR=$FS_ADDR MIR_URL=$FS_URL MIR_LOG=$T/logs/mirror.jsonl
push_layout "$T/src" v1 "$REG_ADDR/test/mirror:v1"
REF=$UP_ADDR/test/mirror:v1
DEAD=$(dead_port)

HOSTS=$T/certs.d
mkdir -p "$HOSTS/$UP_ADDR"
write_hosts() { # CAPABILITIES
  cat >"$HOSTS/$UP_ADDR/hosts.toml" <<EOF
# the registry itself comes last, as containerd tries it
server = "http://$UP_ADDR"

[host."http://127.0.0.1:$DEAD"]
  capabilities = ["pull", "resolve"]

[host."$MIR_URL"]
  capabilities = $1
EOF
}

# served LOG DIGEST -> blob body bytes that server sent for DIGEST
served() { FS_LOG=$1 fs_query 'sum(r["bytes"] for r in L if r["path"].endswith(A[0]) and r["status"] in (200, 206))' "$2"; }
# assert_shared LOG DIGEST MSG: the mirror logging to LOG and the registry served the
# blob between them (both are sources of its chunks at once, in proportion to their
# measured rates), nothing twice; the mirror served some of the image.
assert_shared() {
  local m u
  m=$(served "$1" "$2") u=$(served "$UP_LOG" "$2")
  assert_eq "$(size_of "$2")" $((m + u)) "$3 (mirror $m + registry $u bytes)"
  assert_num "$(FS_LOG=$1 fs_query 'sum(r["bytes"] for r in L if "/blobs/" in r["path"] and r["status"] in (200, 206))')" \
    -gt 0 "$3: the mirror served a share of the image"
}
reset_logs() { : >"$UP_LOG"; : >"$MIR_LOG"; }

N=0
pull() { # WHAT [OPTIONS...]
  local what=$1
  shift
  N=$((N + 1))
  prepull_ok "$what" pull --store "oci:$T/oci-$N" --state-dir "$T/state-$N" -j 4 \
    --chunk-size 64K --hosts-dir "$HOSTS" "$@" "$REF"
  verify_layout "$T/oci-$N" v1
}

# ---- the first mirror is down: everything from the second, with ?ns=
write_hosts '["pull", "resolve"]'
reset_logs
pull "pull through a dead mirror and a live one" -v
for l in "${LAYERS[@]}"; do
  assert_shared "$MIR_LOG" "$l" "layer ${l:7:12} came from the mirror"
done
assert_eq 0 "$(FS_LOG=$UP_LOG fs_query 'len([r for r in L if "/manifests/" in r["path"]])')" \
  "the registry was not asked for a manifest"
assert_eq 0 "$(FS_LOG=$MIR_LOG fs_query 'len([r for r in L if "/v2/test/" in r["path"] and r["query"] != "ns=" + A[0]])' "$UP_ADDR")" \
  "every request to the mirror carries ?ns=$UP_ADDR"
assert_num "$(FS_LOG=$MIR_LOG fs_query 'len([r for r in L if "/manifests/v1" in r["path"]])')" -ge 1 \
  "the tag was resolved at the mirror"
assert_has "$ERR" "127.0.0.1:$DEAD" "-v names the dead mirror"

# ---- the mirror answers 404, 503 and 429 for one blob each
reset_logs
fs_rules "{\"rules\": [
  {\"fault\": \"status\", \"status\": 404, \"path\": \"${LAYERS[0]}\", \"count\": -1},
  {\"fault\": \"status\", \"status\": 503, \"path\": \"${LAYERS[1]}\", \"count\": -1},
  {\"fault\": \"status\", \"status\": 429, \"retry_after\": 60, \"path\": \"${LAYERS[2]}\", \"count\": -1}]}"
t0=$(date +%s)
pull "pull with a mirror that fails three blobs"
assert_num $(($(date +%s) - t0)) -lt 30 "no Retry-After wait on the mirror's 429 (fell through)"
for i in 0 1 2; do
  l=${LAYERS[$i]}
  assert_eq "$(size_of "$l")" "$(served "$UP_LOG" "$l")" "failed layer $i came from the registry, whole"
  assert_eq 0 "$(served "$MIR_LOG" "$l")" "failed layer $i: no bytes from the mirror"
done
assert_shared "$MIR_LOG" "${LAYERS[3]}" "the healthy layer still came from the mirror"
# A mirror gets one request per blob until it answers one with a range: so one
# failed request per failed blob (of 17 chunks of 64K, -j 4), no more.
for i in 0 1 2; do
  assert_eq 1 "$(FS_LOG=$MIR_LOG fs_query 'len([r for r in L if r["path"].endswith(A[0])])' "${LAYERS[$i]}")" \
    "failed layer $i: one request failed at the mirror"
done
fs_rules '{"rules": []}'

# ---- the mirror's rate limit (Docker Hub's RateLimit-* headers) is named when it
# answers 429 for the tag; the tag is then resolved at the registry
reset_logs
fs_canned '{"routes": {"/v2/test/mirror/manifests/v1": {"status": 429, "headers": {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "0;w=21600"}, "body": "{\"errors\": [{\"code\": \"TOOMANYREQUESTS\", \"message\": \"You have reached your pull rate limit\"}]}"}}}'
pull "pull with a mirror over its rate limit"
assert_has "$ERR" "HTTP 429: TOOMANYREQUESTS You have reached your pull rate limit (rate limit: 100 per 21600 s, 0 left)" \
  "the 429 names the limit and what is left"
assert_num "$(FS_LOG=$UP_LOG fs_query 'len([r for r in L if "/manifests/v1" in r["path"]])')" -ge 1 \
  "the tag was resolved at the registry"
fs_canned '{"routes": {"/v2/test/mirror/manifests/v1": null}}'

# ---- the mirror flips a byte in one chunk of a layer: the layer still commits, the
# mirror is named, and the registry serves it at most 1.1 times
reset_logs
# (the mirror's first answer for the layer: its chunks are shared with the registry,
# so a fixed offset might be the registry's)
fs_rules "{\"rules\": [{\"fault\": \"flip\", \"path\": \"${LAYERS[3]}\", \"count\": 1}]}"
pull "pull with a mirror that flips a byte" --json
assert_num "$(FS_LOG=$MIR_LOG fs_query 'sum(1 for r in L if r["fault"] == "flip")')" -ge 1 "the mirror flipped a byte"
assert_contains "$ERR" "mirror $MIR_ADDR served it, so it is dropped for this blob" "the mirror is named"
assert_json_lines "$OUT" "--json output"
DROPPED=$(json_events "$OUT" source_dropped)
log "$DROPPED"
assert_contains "$DROPPED" "\"blob\": \"${LAYERS[3]}\"" "a source_dropped event names the layer"
assert_contains "$(grep -F "\"${LAYERS[3]}\"" <<<"$DROPPED")" "\"host\": \"$MIR_ADDR\"" "... and the mirror"
assert_contains "$(grep -F "\"${LAYERS[3]}\"" <<<"$DROPPED")" "\"mirror\": true" "... as a mirror"
assert_not_contains "$DROPPED" "\"host\": \"$UP_ADDR\"" "the registry is not dropped"
log "$(grep -m1 'served it' <<<"$ERR")"
up=$(served "$UP_LOG" "${LAYERS[3]}")
assert_num "$up" -gt 0 "the registry served the layer's chunks again"
assert_num $((up * 10)) -le $(($(size_of "${LAYERS[3]}") * 11)) "the registry served at most 1.1 times the layer"
fs_rules '{"rules": []}'

# ---- the mirror ignores Range for a layer (a pull-through cache still filling), with
# --cache-fill bypass: its whole-blob answers are cut off, it is asked again only after
# a backoff (0.25 s doubling, jittered), and the registry carries the layer meanwhile:
# no fallback to one stream from the mirror
reset_logs
fs_rules "{\"rules\": [{\"fault\": \"norange\", \"path\": \"${LAYERS[2]}\", \"count\": -1}]}"
pull "pull with a mirror that ignores Range for one layer" -v --cache-fill bypass
assert_contains "$ERR" "blob ${LAYERS[2]:0:19}: mirror $MIR_ADDR ignored Range" "-v says the mirror ignored Range"
assert_not_contains "$ERR" "fetching it as one stream" "no fallback to one stream"
mreq=$(FS_LOG=$MIR_LOG fs_query 'len([r for r in L if r["path"].endswith(A[0])])' "${LAYERS[2]}")
assert_num "$mreq" -le 4 "the mirror was asked for the layer a few times ($mreq), not once per chunk"
assert_num "$(served "$UP_LOG" "${LAYERS[2]}")" -ge "$(size_of "${LAYERS[2]}")" "the registry carried the layer"
fs_rules '{"rules": []}'

# ---- the same by default (--cache-fill wait), the mirror filling for its first two
# answers: the layer waits for the mirror (asked again after 0.5 s, then 1 s, each
# jittered down to half), which serves all of it once it answers a range; the
# registry serves none of it, the other layers go on meanwhile
reset_logs
fs_rules "{\"rules\": [{\"fault\": \"norange\", \"path\": \"${LAYERS[2]}\", \"count\": 2}]}"
pull "pull with a mirror filling one layer" -v
assert_contains "$ERR" "mirror $MIR_ADDR is filling blob ${LAYERS[2]:0:19}" "-v says the mirror is filling the layer"
assert_contains "$ERR" "blob ${LAYERS[2]:0:19}: mirror $MIR_ADDR has it now" "-v says when it has it"
assert_eq 0 "$(served "$UP_LOG" "${LAYERS[2]}")" "the registry served none of the layer"
assert_eq 2 "$(FS_LOG=$MIR_LOG fs_query 'sum(1 for r in L if r["path"].endswith(A[0]) and r["fault"] == "norange")' "${LAYERS[2]}")" \
  "the mirror ignored Range twice"
mfull=$(FS_LOG=$MIR_LOG fs_query 'sum(r["bytes"] for r in L if r["path"].endswith(A[0]) and r["status"] == 206)' "${LAYERS[2]}")
assert_eq "$(size_of "${LAYERS[2]}")" "$mfull" "the mirror served the whole layer in ranges"
fs_rules '{"rules": []}'

# ---- the mirror sends a config that does not hash to its digest: taken from the registry
CONFIG=$(img_field v1 'o["platforms"]["linux/amd64"]["config"]')
reset_logs
fs_canned "{\"routes\": {\"/v2/test/mirror/blobs/$CONFIG\": {\"status\": 200, \"body\": \"{}\"}}}"
pull "pull with a mirror serving a wrong config"
assert_contains "$ERR" "blobs ${CONFIG:0:19}.*mirror $MIR_ADDR: content hashes to" "the mirror's wrong bytes are named"
assert_eq 1 "$(FS_LOG=$UP_LOG fs_query 'len([r for r in L if r["path"].endswith(A[0])])' "$CONFIG")" \
  "the config came from the registry"
fs_canned "{\"routes\": {\"/v2/test/mirror/blobs/$CONFIG\": null}}"

# ---- the mirror may pull but not resolve: the tag at the registry only
write_hosts '["pull"]'
reset_logs
pull "pull with a mirror without resolve"
assert_eq 0 "$(FS_LOG=$MIR_LOG fs_query 'len([r for r in L if "/manifests/v1" in r["path"]])')" \
  "the tag was not asked of the mirror"
assert_num "$(FS_LOG=$UP_LOG fs_query 'len([r for r in L if "/manifests/v1" in r["path"]])')" -ge 1 \
  "the tag was resolved at the registry"
for l in "${LAYERS[@]}"; do
  assert_shared "$MIR_LOG" "$l" "layer ${l:7:12} came from the mirror"
done

# ---- --mirror without hosts.toml
reset_logs
pull "pull with --mirror" --hosts-dir "" --mirror "$UP_ADDR=$MIR_URL"
assert_shared "$MIR_LOG" "${LAYERS[0]}" "--mirror: blobs from the mirror"

# ---- the config file's "mirrors" and "hosts_dir"
printf '{"hosts_dir": "", "mirrors": {"%s": ["%s"]}}\n' "$UP_ADDR" "$MIR_URL" >"$T/config.json"
reset_logs
pull "pull with the config's mirrors" --config "$T/config.json"
assert_shared "$MIR_LOG" "${LAYERS[1]}" "config mirrors: blobs from the mirror"
printf '{"mirrors": ["%s"]}\n' "$MIR_URL" >"$T/bad-config.json"
run_prepull pull --config "$T/bad-config.json" "$REF"
assert_eq 2 "$RC" "a config whose mirrors is not an object is a usage error"
assert_has "$ERR" '"mirrors": expected an object' "the message names the key"
run_prepull pull --mirror "$MIR_URL" "$REF"
assert_eq 2 "$RC" "--mirror without HOST= is a usage error"
assert_has "$ERR" "--mirror: expected HOST=URL" "the message says what is expected"
run_prepull pull --cache-fill sometimes "$REF"
assert_eq 2 "$RC" "--cache-fill takes wait or bypass only"
assert_has "$ERR" "--cache-fill: expected wait or bypass" "the message says what is expected"

# ---- a mirror with credentials of its own (config.json, by the mirror's host)
start_faultserver --log "$T/logs/authmirror.jsonl" --auth basic:mu:mirror-secret
AM_URL=$FS_URL AM_LOG=$T/logs/authmirror.jsonl
write_docker_config "$T/dc" "$FS_ADDR" mu mirror-secret
reset_logs
DOCKER_CONFIG=$T/dc pull "pull through a mirror that wants Basic credentials" --hosts-dir "" \
  --mirror "$UP_ADDR=$AM_URL"
assert_shared "$AM_LOG" "${LAYERS[0]}" "the mirror with credentials served the blob"
assert_not_contains "$ERR" "mirror-secret" "the mirror's password is never printed"
# Without its credentials the mirror refuses (401): the registry serves instead.
: >"$AM_LOG"
reset_logs
pull "a mirror refusing us hands over to the registry" --hosts-dir "" --mirror "$UP_ADDR=$AM_URL"
assert_eq 0 "$(served "$AM_LOG" "${LAYERS[0]}")" "no blob bytes from the refusing mirror"
assert_eq "$(size_of "${LAYERS[0]}")" "$(served "$UP_LOG" "${LAYERS[0]}")" "the registry served the blob"

# ---- a malformed hosts.toml: the pull fails and says where
printf 'server = "http://%s"\n\n[host."%s"]\n  capabilities "pull"\n' "$UP_ADDR" "$MIR_URL" \
  >"$HOSTS/$UP_ADDR/hosts.toml"
run_prepull pull --store "oci:$T/oci-bad" --state-dir "$T/state-bad" --hosts-dir "$HOSTS" "$REF"
assert_eq 1 "$RC" "a malformed hosts.toml fails the pull"
assert_has "$ERR" "$HOSTS/$UP_ADDR/hosts.toml:4: expected '=' after key" "the error names the file and line"
