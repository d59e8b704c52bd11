#!/usr/bin/env bash
# Usage errors exit 2; failures exit 1 with one clear line naming the image.
source "$(dirname "$0")/lib.sh"
need_prepull

run_prepull --version
assert_eq 0 "$RC" "--version exits 0"
assert_contains "$OUT$ERR" "[0-9]+\.[0-9]+" "--version prints a version"
run_prepull --help
assert_eq 0 "$RC" "--help exits 0"
assert_contains "$OUT$ERR" "pull" "--help mentions pull"

run_prepull pull --no-such-flag example.invalid/x:1
assert_eq 2 "$RC" "unknown flag exits 2"
assert_has "$ERR" "unknown option --no-such-flag" "unknown flag: the message names the problem"
run_prepull pull
assert_eq 2 "$RC" "'pull' without an image exits 2"
run_prepull frobnicate
assert_eq 2 "$RC" "unknown command exits 2"
run_prepull pull --connections notanumber 127.0.0.1:1/x:1
assert_eq 2 "$RC" "-j with a non-number exits 2"
run_prepull pull --chunk-size 4Q 127.0.0.1:1/x:1
assert_eq 2 "$RC" "--chunk-size with a bad size exits 2"

start_registry
mkimage "$T/src" v1 --layer busybox:gzip
push_layout "$T/src" v1 "$REG_ADDR/test/exists:v1"

# Unknown repository / unknown tag.
run_prepull pull --store "oci:$T/oci" "$REG_ADDR/test/nosuchrepo:v1"
assert_eq 1 "$RC" "unknown repository exits 1"
assert_contains "$ERR" "test/nosuchrepo" "unknown repository: the message names the image"
assert_has "$ERR" "manifest v1 not found in $REG_ADDR/test/nosuchrepo" "unknown repository: the message says it is not there"
run_prepull pull --store "oci:$T/oci" "$REG_ADDR/test/exists:nosuchtag"
assert_eq 1 "$RC" "unknown tag exits 1"
assert_contains "$ERR" "nosuchtag" "unknown tag: the message names the tag"

# One good and one bad image: exit 1, the good one still lands.
run_prepull pull --store "oci:$T/oci-mixed" --json "$REG_ADDR/test/exists:v1" "$REG_ADDR/test/nosuchrepo:v1"
assert_eq 1 "$RC" "one good + one missing image exits 1"
assert_contains "$(index_entries "$T/oci-mixed" 2>/dev/null || true)" "test/exists:v1" "the good image is still in the layout"
assert_contains "$(json_events "$OUT" error)" "nosuchrepo" "an error event names the missing image"
assert_contains "$(json_events "$OUT" summary)" '"failed": 1' "summary counts one failed image"

# Invalid references.
# Each with the reason it is invalid (the quoted input alone would match "bad").
for c in 'UPPER/Case:tag|repository name must be lowercase' \
  "$REG_ADDR/test/x:bad tag|invalid tag \"bad tag\"" \
  "$REG_ADDR/test/x@sha256:1234|invalid digest \"sha256:1234\": sha256 needs 64 hex characters" \
  "$REG_ADDR/test//x:1|empty path component in repository name" \
  ':nope|missing repository name'; do
  bad=${c%%|*} why=${c#*|}
  run_prepull pull --store "oci:$T/oci-inv" "$bad"
  if [ "$RC" -eq 1 ] || [ "$RC" -eq 2 ]; then ok "invalid reference [$bad] exits $RC"; else fail "invalid reference [$bad]: exit $RC"; fi
  assert_has "$ERR" "invalid reference \"$bad\": $why" "invalid reference [$bad]: clear message"
done

# Dead registry: nothing listens on the port.
DEAD=$(dead_port)
run_prepull pull --store "oci:$T/oci-dead" "127.0.0.1:$DEAD/test/x:1"
assert_eq 1 "$RC" "dead registry exits 1"
assert_contains "$ERR" "127.0.0.1:$DEAD|test/x" "dead registry: the message names the image or registry"
assert_contains "$ERR" "error: 127\.0\.0\.1:$DEAD/test/x:1: .*Couldn't connect to server" "dead registry: the message says the connection failed"
assert_num "$(printf "%s\n" "$ERR" | grep -ci "test/x")" -ge 1 "dead registry: an error line names the image"
