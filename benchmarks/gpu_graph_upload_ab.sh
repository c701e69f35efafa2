#!/usr/bin/env bash
# What uploading every captured CUDA graph at capture (`engine/graph_upload.py`) costs an engine's start-up, and
# what a request after a pause pays: A is this tree, B the same tree with `upload` returning False at once (a copy
# under OUT/b-tree), both on one cache root that a first, uncounted start fills. Rounds alternate B, A.
# Then benchmarks/idle_gap.py --trace 7 with A (a request's time before, over and after its device ops, after
# each pause). Usage: MODEL=builtin:llama-3.1-8b ROUNDS=3 bash benchmarks/gpu_graph_upload_ab.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start, stamp
gpu_start "${1:-graph-upload-ab}"  # sets out, here; PYTHONPATH
model=${MODEL:-builtin:llama-3.1-8b}
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-upload-ab}

btree=$out/b-tree
rm -rf "$btree" && mkdir -p "$btree" && cp -r "$here/tierlm" "$here/benchmarks" "$btree/"
python3 - "$btree/tierlm/engine/graph_upload.py" <<'PY' || { echo "B not built: nothing compared"; exit 1; }
import sys
path = sys.argv[1]
src = open(path).read()
head = '    """Upload `graph` (captured, not yet replayed) in `stream` (default: the current one); whether it was."""\n'
assert head in src, "graph_upload.upload changed: update this script"
open(path, "w").write(src.replace(head, head + "    return False  # B: no upload at capture\n"))
PY

start() {  # SIDE TAG: one engine start with SIDE's tree, its log in OUT/TAG.txt, its summary line printed
  local dir=$here; [ "$1" = B ] && dir=$btree
  (cd "$dir" && PYTHONPATH=$dir timeout 300 python3 benchmarks/engine_start.py --model "$model" > "$out/$2.txt" 2>&1) \
    || echo "$2 failed (exit $?)"
  echo "$2: $(grep -E "^engine start|^captured" "$out/$2.txt" | tr '\n' ';')"
}

stamp "warm-up start (fills the cache root, not counted)"
start A warm
for round in $(seq 1 "${ROUNDS:-3}"); do
  start B "b-$round"
  start A "a-$round"
done
stamp "idle_gap --trace 7"
timeout 240 python3 benchmarks/idle_gap.py --model "$model" --repeats 8 --trace 7 > "$out/idle-gap.txt" 2>&1 \
  || echo "idle_gap failed (exit $?)"
grep -v "^INFO" "$out/idle-gap.txt"
rm -rf "$btree"
