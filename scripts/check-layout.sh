#!/usr/bin/env bash
# Checks the code's large-scale shape (run by scripts/test.sh):
#   - no source file in agent/ over 800 lines;
#   - nothing outside the store files touches a store's function table (->ops);
#   - the engine's private header is included only by the engine's files
#     (and by unit tests, which may look inside);
#   - no include circle between modules.  A module is a header in
#     include/prepull/ with the .c files that implement it; files named in
#     MODULES below are one module spread over several files.
# Prints what is wrong and exits 1, or prints "layout ok".
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_LINES=800
ENGINE_FILES="agent/engine.c agent/transfer.c agent/partial.c agent/verify.c agent/lanes.c agent/race.c agent/sources.c"
fail=0
problem() { echo "layout: $*" >&2; fail=1; }

for f in agent/*.c agent/*.h; do
  n=$(wc -l <"$f")
  [ "$n" -le "$MAX_LINES" ] || problem "$f has $n lines (at most $MAX_LINES)"
done

while IFS= read -r hit; do
  problem "a store's function table used outside store*.c: $hit"
done < <(grep -nE -- '(store|\bs)->ops\b' agent/*.c | grep -v '^agent/store[a-z_]*\.c:' || true)

while IFS= read -r f; do
  case " $ENGINE_FILES " in *" $f "*) ;; *) problem "$f includes the engine's private header" ;; esac
done < <(grep -l '#include "engine_int.h"' agent/*.c agent/*.h || true)

python3 - <<'PY' || fail=1
import glob, os, re, sys
# Files that make up one module under another name.
MODULES = {
    "hosts_toml": "hosts", "engine_int": "engine", "transfer": "engine", "partial": "engine", "verify": "engine",
    "lanes": "engine", "hashpool": "engine", "flusher": "engine", "sources": "engine", "race": "engine",
    "unpack_int": "unpack", "unpack_apply": "unpack",
}
for prefix in ("auth", "unpack"):
    for f in glob.glob("agent/%s_*.[ch]" % prefix):
        MODULES[os.path.basename(f).rsplit(".", 1)[0]] = prefix
# The containerd store's own files (its wire API, containerd_api, is apart).
MODULES.update({"containerd_int": "store_containerd", "containerd_stream": "store_containerd"})
MODULES.update({"progress_int": "progress"})
def module(path):
    name = os.path.basename(path).rsplit(".", 1)[0]
    return MODULES.get(name, name)
edges = {}
for path in glob.glob("agent/*.[ch]") + glob.glob("include/prepull/*.h"):
    m = module(path)
    for inc in re.findall(r'#include "(?:prepull/)?([a-z_0-9]+)\.h"', open(path).read()):
        n = MODULES.get(inc, inc)
        if n != m:
            edges.setdefault(m, set()).add(n)
# Depth-first search for a back edge: that is a circle.
state, stack, circles = {}, [], []
def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(edges.get(m, ())):
        if state.get(n) == 1:
            circles.append(stack[stack.index(n):] + [n])
        elif n not in state:
            visit(n)
    stack.pop()
    state[m] = 2
for m in sorted(edges):
    if m not in state:
        visit(m)
for c in circles:
    print("layout: include circle: " + " -> ".join(c), file=sys.stderr)
sys.exit(1 if circles else 0)
PY

[ "$fail" -eq 0 ] && echo "layout ok"
exit "$fail"
