"""Repetition, presence and frequency penalties: the table of marks and the adjusted logits against a direct
spelling of the rules; greedy outputs of penalized requests against transformers (its repetition penalty) and a
step-by-step reference on its model, with overlap scheduling, mixed batches and retraction."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.penalties import Penalties, penalize
from tierlm.sampling_params import SamplingParams as Params

PROMPTS = ["the quick brown fox jumps over the lazy dog", "hello", "paris is the capital of france and berlin is",
           "one two three four five six seven eight nine ten"]


def reference_adjust(logits: list[float], prompt: list[int], output: list[int], p: Params) -> list[float]:
    """The rules spelled out token by token (vLLM's order: repetition first, then frequency and presence)."""
    out = list(logits)
    counts = Counter(output)
    for tok in set(prompt) | set(output):
        out[tok] = out[tok] / p.repetition_penalty if out[tok] > 0 else out[tok] * p.repetition_penalty
    for tok, c in counts.items():
        out[tok] -= p.frequency_penalty * c + p.presence_penalty
    return out


def req(prompt: list[int], params: Params, output: tuple[int, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(token_ids=prompt + list(output), prompt_len=len(prompt), params=params,
                           penalized=params.penalized, penalty_row=None, finished=False)


def test_penalize_matches_the_rules():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen)
    cases = [([1, 2, 3], [3, 4, 4, 9], Params(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25)),
             ([7], [], Params(repetition_penalty=0.8)),
             ([0, 49], [49, 49, 49], Params(presence_penalty=-1.0, frequency_penalty=2.0))]
    marks = torch.zeros(3, 50, dtype=torch.int32)
    for i, (prompt, output, _) in enumerate(cases):
        marks[i, prompt] = 1
        for tok in output:
            marks[i, tok] += 2
    got = penalize(logits, marks, *(torch.tensor([getattr(c[2], f) for c in cases]) for f in
                                     ("repetition_penalty", "presence_penalty", "frequency_penalty")))
    for i, (prompt, output, p) in enumerate(cases):
        assert got[i].tolist() == pytest.approx(reference_adjust(logits[i].tolist(), prompt, output, p), abs=1e-6)


def test_table_rows_follow_their_requests():
    pen = Penalties(torch.device("cpu"))
    plain = req([1, 2], Params())
    a = req([1, 2, 2], Params(frequency_penalty=1.0), output=(5,))
    b = req([3], Params(repetition_penalty=2.0))
    for r in (plain, a, b):
        assert pen.batch([r], 8) is None  # before `expect` sees a request that asks, nothing is looked at
    pen.expect(plain)
    assert pen.batch([plain], 8) is None and pen._marks is None
    pen.expect(a)
    assert pen.batch([plain], 8) is None  # nothing in this pass asks: no table, no uploads
    logits = torch.zeros(3, 8, dtype=torch.bfloat16)
    batch = pen.batch([a, plain, b], 8)
    out = batch.adjust(logits)
    assert out.dtype == torch.float32 and logits.abs().sum() == 0
    assert out[0].tolist() == [0, 0, 0, 0, 0, -1, 0, 0] and out[1].abs().sum() == 0 and out[2].abs().sum() == 0
    assert batch.slots.tolist() == [1, 0, 2] and batch.factors[1].tolist() == [1, 0, 0]
    batch.record(torch.tensor([5, 6, 3]))  # a samples 5 again, b samples 3 (a prompt token: counted once more)
    out = pen.batch([a, plain, b], 8).adjust(torch.ones(3, 8))
    assert out[0].tolist() == [1, 1, 1, 1, 1, -1, 1, 1] and out[1].tolist() == [1] * 8
    assert out[2].tolist() == [1, 1, 1, 0.5, 1, 1, 1, 1]
    assert pen.rows_held == 2 and (a.penalty_row, b.penalty_row) == (1, 2)
    a.finished = True
    c = req([4], Params(presence_penalty=1.0))
    pen.batch([c], 8).record(torch.tensor([2]))
    assert c.penalty_row == 1 and a.penalty_row is None  # a finished: its row is c's, cleared first
    assert pen.batch([c], 8).adjust(torch.ones(1, 8))[0].tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    many = [req([i % 8], Params(presence_penalty=1.0)) for i in range(20)]  # more rows than the table had
    pen.batch(many, 8)
    assert pen.rows_held == 22 and len({r.penalty_row for r in many + [b, c]}) == 22
    assert pen.batch([b], 8).adjust(torch.zeros(1, 8))[0].tolist()[3] == 0  # b's row survived the growth


def test_neutral_rows_keep_their_logits_bit_for_bit():
    logits = torch.tensor([[0.0, -0.0, float("inf"), float("-inf"), 1e-38, -3.5, float("nan")]])
    marks = torch.tensor([[3, 1, 7, 2, -6, 0, 9]], dtype=torch.int32)  # whatever row 0 holds
    one, zero = torch.ones(1), torch.zeros(1)
    out = penalize(logits, marks, one, zero, zero)
    assert torch.equal(out.view(torch.int32)[:, :6], logits.view(torch.int32)[:, :6]) and out[0, 6].isnan()


@pytest.fixture(scope="module")
def hf_model(tiny_qwen3):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()


def reference_greedy(model, prompt: list[int], p: Params, n: int) -> list[int]:
    """Greedy decoding on transformers' model, each step's logits adjusted by `reference_adjust`."""
    out: list[int] = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + out])).logits[0, -1].tolist()
        adjusted = reference_adjust(logits, prompt, out, p)
        out.append(max(range(len(adjusted)), key=adjusted.__getitem__))
    return out


def ids_of(llm: LLM) -> list[list[int]]:
    return [llm.tokenizer.encode(p) for p in PROMPTS]


@pytest.mark.parametrize("overlap", [True, False])
def test_repetition_penalty_matches_transformers(tiny_qwen3, hf_model, overlap):
    llm = LLM(str(tiny_qwen3), overlap_schedule=overlap, **CPU_OPTS)
    ids = ids_of(llm)
    ours = llm.generate(ids, SamplingParams(temperature=0, max_tokens=20, repetition_penalty=1.5, ignore_eos=True))
    llm.close()
    for i, (o, prompt) in enumerate(zip(ours, ids)):
        with torch.no_grad():
            gen = hf_model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                    repetition_penalty=1.5, pad_token_id=0, eos_token_id=None)
        assert o.token_ids == gen[0, len(prompt):].tolist(), f"prompt {i}"


def test_mixed_penalties_in_one_batch_match_the_reference(tiny_qwen3, hf_model):
    """Penalized and plain rows in the same passes; each row as if alone."""
    settings = [Params(temperature=0, max_tokens=16, ignore_eos=True, frequency_penalty=1.5),
                Params(temperature=0, max_tokens=16, ignore_eos=True),
                Params(temperature=0, max_tokens=16, ignore_eos=True, presence_penalty=2.0, repetition_penalty=0.9),
                Params(temperature=0, max_tokens=16, ignore_eos=True, frequency_penalty=-0.5)]
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    ids = ids_of(llm)
    ours = llm.generate(ids, settings)
    llm.close()
    for i, (o, prompt, p) in enumerate(zip(ours, ids, settings)):
        assert o.token_ids == reference_greedy(hf_model, prompt, p, 16), f"prompt {i}"
    plain = reference_greedy(hf_model, ids[0], settings[1], 16)
    assert ours[0].token_ids != plain, "the penalty must change this output (else the test proves nothing)"


def test_penalties_survive_retraction(tiny_qwen3):
    """A pool too small for every request: some are retracted and resumed; their outputs equal the roomy run's."""
    params = Params(temperature=0, max_tokens=40, ignore_eos=True, frequency_penalty=0.7, repetition_penalty=1.2)
    prompts = [p + " " + str(i) for i in range(3) for p in PROMPTS]
    roomy = LLM(str(tiny_qwen3), **CPU_OPTS)
    expected = [o.token_ids for o in roomy.generate(prompts, params)]
    roomy.close()
    tight = LLM(str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002}, reserve_new_tokens=1, max_running_requests=6)
    got = [o.token_ids for o in tight.generate(prompts, params)]
    assert tight.engine.stats()["retracted_total"] > 0, "the test needs retraction"
    tight.close()
    assert got == expected


def test_penalties_under_tensor_parallelism(tiny_qwen3):
    """Two ranks (gloo): the controller's rank applies the penalties, the other stores the tokens it is sent."""
    params = [Params(temperature=0, max_tokens=12, ignore_eos=True, frequency_penalty=1.0, repetition_penalty=1.4),
              Params(temperature=0, max_tokens=12, ignore_eos=True)]
    one = LLM(str(tiny_qwen3), **CPU_OPTS)
    expected = [o.token_ids for o in one.generate(PROMPTS[:2], params)]
    one.close()
    two = LLM(str(tiny_qwen3), tp_size=2, **CPU_OPTS)
    got = [o.token_ids for o in two.generate(PROMPTS[:2], params)]
    two.close()
    assert got == expected
