# Shell helpers of the A/B benchmarks (sourced, not run): the two trees and the output folder, #20's batch-1 TPOT of
# Qwen3-0.6B and its summary line.
b1_tpot() {  # DIR OUT_PREFIX [ENV=VALUE ...]: one request, 128 in / 512 out, with DIR's code; OUT_PREFIX.json/.err
  # (B1_TIMEOUT, 100 s: a first start that tunes kernels needs more)
  local dir=$1 prefix=$2; shift 2
  (cd "$dir" && env "$@" PYTHONPATH="$dir" timeout "${B1_TIMEOUT:-100}" python3 -m tierlm bench offline \
    --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --num-requests 1 --input-len 128 128 \
    --output-len 512 512 --json \
    > "$prefix.json" 2> "$prefix.err") || echo "b1 $(basename "$prefix") failed"
}

print_b1() {  # JSON: its TPOT p50 and mean
  python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['tierlm']; print('b1 TPOT p50 %.3f ms, mean %.3f ms' \
    % (t['tpot_s']['p50'] * 1e3, t['tpot_s']['mean'] * 1e3))" "$1" || echo "no b1 result"
}

stamp() {  # WORDS: a timestamped step line of a GPU script's output
  echo "== $(date +%T) $*"
}

print_versions() {  # torch, Triton and the GPU's name, the first line of every GPU script's output
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
    torch.cuda.get_device_name())"
}

gpu_start() {  # OUT: one tree's GPU run: sets here (the tree of these helpers) and out (OUT, created), PYTHONPATH;
  # prints the versions
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkdir -p "$1"; out=$(cd "$1" && pwd)
  export PYTHONPATH=$here PYTHONUNBUFFERED=1
  print_versions
}

ab_dirs() {  # B_DIR OUT: sets base (B's checkout) and out (created) as absolute paths, here (this tree)
  base=$(cd "$1" && pwd)
  mkdir -p "$2"; out=$(cd "$2" && pwd)
  here=$PWD
  export PYTHONUNBUFFERED=1
}

side_dir() {  # SIDE: the checkout of side A (this tree) or B (after ab_dirs)
  if [ "$1" = B ]; then echo "$base"; else echo "$here"; fi
}

side_root() {  # NAME SIDE: the cache root of SIDE's runs, `.cache-NAME-SIDE` under this tree, or `.cache-NAME-shared`
  # for both sides with SHARED_ROOT set (both then run the launches the first run tuned)
  if [ -n "${SHARED_ROOT:-}" ]; then echo "$here/.cache-$1-shared"; else echo "$here/.cache-$1-$2"; fi
}

profile_side() {  # ROOT SIDE NAME SECONDS ARGS...: benchmarks/profile_engine.py ARGS with SIDE's tree on its cache
  # root ROOT (`side_root`), at most SECONDS, into $out/NAME.txt and .err (after ab_dirs)
  local root=$1 side=$2 name=$3 seconds=$4; shift 4
  local dir; dir=$(side_dir "$side")
  (cd "$dir" && TIERLM_CACHE_DIR=$(side_root "$root" "$side") PYTHONPATH=$dir timeout "$seconds" python3 \
    benchmarks/profile_engine.py "$@" > "$out/$name.txt" 2> "$out/$name.err") \
    || { echo "failed:"; tail -n 5 "$out/$name.err"; }
}
