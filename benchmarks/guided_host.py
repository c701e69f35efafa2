"""What a pass's grammar masks cost the host, filled one by one against side by side (`engine.guided`).

A byte-level tokenizer of --vocab random tokens (a served model's vocabulary size; the fill walks it) and a small
JSON schema; N guided requests are fed the same opening, ending inside a string (where most tokens are allowed:
the costly state) or between fields (few), and each pass's masks are filled --repeats times by a `GuidedDecoding`
that fills them on the calling thread (fill_threads 0) and by one as the engine makes it (`MaskFill` picks one
thread or several, one per CPU this process may use, at most eight, pass by pass; the column "chosen" says what it
picked after the first pass). Masks of the two must be equal. Prints a table of the median milliseconds per pass;
runs on the CPU (the fill is host work).

    python benchmarks/guided_host.py [--vocab 151936] [--rows 1,16,64,256] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import time
from types import SimpleNamespace

import torch

from tierlm.engine.guided import GuidedDecoding
from tierlm.sampling_params import SamplingParams

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "name": {"type": "string"},
                                           "color": {"enum": ["red", "green", "blue"]}},
          "required": ["ok", "name", "color"], "additionalProperties": False}
OPENINGS = {"in a string": '{"ok": true, "name": "ab', "between fields": '{"ok": true, "name": "x", '}


def random_tokenizer(size: int, seed: int = 0):
    """A byte-level BPE tokenizer (as Qwen's and Llama 3's) whose vocabulary is the 256 byte symbols plus random
    pieces of JSON-ish text, `size` in all, and an end-of-sequence token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rnd = random.Random(seed)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    chars = string.ascii_lowercase + '":{}, 0123456789'
    while len(vocab) < size - 1:
        piece = "".join(rnd.choice(chars) for _ in range(rnd.randint(2, 8)))
        vocab.setdefault(("Ġ" if rnd.random() < 0.5 else "") + piece.replace(" ", "Ġ"), len(vocab))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    tok.add_special_tokens({"eos_token": "<|end|>"})
    return tok


def pass_ms(guided: GuidedDecoding, reqs: list, vocab: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Median milliseconds of one pass's masker (the fill, on the host), and the masked logits."""
    times, logits = [], None
    for _ in range(repeats + 1):  # the first is a warm-up
        t = time.perf_counter()
        apply = guided.masker(reqs)
        times.append((time.perf_counter() - t) * 1e3)
        logits = torch.zeros(len(reqs), vocab)
        apply(logits)
    return statistics.median(times[1:]), logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--rows", default="1,16,64,256", help="guided requests per pass, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tok = random_tokenizer(args.vocab)
    vocab = len(tok)
    makers = {"one by one": 0, "as the engine": None}
    decoders = {name: GuidedDecoding(tok, vocab, [tok.eos_token_id], torch.device("cpu"), threads)
                for name, threads in makers.items()}
    print(f"vocabulary {vocab}, fill threads {decoders['as the engine'].fill.threads}")
    print(f"{'state':<16}{'rows':>6}" + "".join(f"{name + ' ms':>18}" for name in makers) + f"{'ratio':>8}  chosen")
    for state, opening in OPENINGS.items():
        ids = tok.encode(opening, add_special_tokens=False)
        for rows in (int(r) for r in args.rows.split(",")):
            got = {}
            for name, guided in decoders.items():
                reqs = [SimpleNamespace(request_id=f"{state}{rows}-{i}", guided=False,
                                        params=SamplingParams(json_schema=json.dumps(SCHEMA))) for i in range(rows)]
                for r in reqs:
                    guided.expect(r)
                while guided.num_compiling:
                    assert all(error is None for _, error in guided.compiled(timeout=5.0))
                for r in reqs:
                    assert all(guided.accept(r, t) is None for t in ids)
                got[name] = pass_ms(guided, reqs, vocab, args.repeats)
                for r in reqs:
                    guided.done(r)
            (a, mask_a), (b, mask_b) = got.values()
            side = decoders["as the engine"].fill
            chosen, side.side_by_side = ("side by side" if side.side_by_side else "one by one"), 0
            assert torch.equal(mask_a, mask_b), "masks filled side by side differ from those filled one by one"
            print(f"{state:<16}{rows:>6}{a:>18.2f}{b:>18.2f}{a / b:>8.2f}  {chosen}")
    for guided in decoders.values():
        guided.close()


if __name__ == "__main__":
    main()
