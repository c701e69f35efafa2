"""Child process of the --compile tests: greedy outputs of a tiny model with and without --compile, and the
compiled engine's start-up report (torch's compile counters). usage: _compile_worker.py MODEL_DIR"""
import json
import os
import sys

import tierlm  # noqa: F401  (first: wires the cache root)
from tierlm import LLM, SamplingParams

# several prompts in one batch (prefill of many tokens, decode of three), a one-token prompt, and a request
# alone (decode batches of one token)
PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [9], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
ALONE = [[5, 6, 7]]
OPTS = dict(device="cpu", dtype="float32", kv_cache_gb=0.01, page_size=4)


def greedy(llm):
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)
    return [o.token_ids for o in llm.generate(PROMPTS, params) + llm.generate(ALONE, params)]


eager = LLM(sys.argv[1], **OPTS)
expected = greedy(eager)
eager.close()
compiled = LLM(sys.argv[1], compile=True, **OPTS)
print(json.dumps({"eager": expected, "compiled": greedy(compiled), "startup": compiled.engine.startup,
                  "tree": str(compiled.engine.worker.runner.aot.path),
                  "autotune_override_after_start": os.environ.get("TIERLM_AUTOTUNE_CACHE_DIR")}))
