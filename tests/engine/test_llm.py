"""`LLM.generate`'s progress bar: built only when asked for (a tqdm, even a disabled one, costs a process's first
request a lock and a monitor thread), and counting every finished request when it is, refused ones too."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine import llm as llm_module


class _Bar:
    """Stands in for tqdm: records what `generate` asks of its bar."""

    def __init__(self, made: list, **kwargs) -> None:
        self.total, self.done, self.closed = kwargs["total"], 0, False
        made.append(self)

    def update(self, n: int) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    engine = LLM(str(tiny_qwen3), **CPU_OPTS)
    yield engine
    engine.close()


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_generate_builds_a_progress_bar_only_when_asked(llm, monkeypatch, use_tqdm):
    made: list = []
    monkeypatch.setattr(llm_module, "tqdm", lambda **kw: _Bar(made, **kw))
    outs = llm.generate(["hello there", [5, 6, 7]], SamplingParams(temperature=0, max_tokens=3), use_tqdm=use_tqdm)
    assert [len(o.token_ids) for o in outs] == [3, 3]
    if not use_tqdm:
        assert made == []
        return
    assert len(made) == 1 and (made[0].total, made[0].done, made[0].closed) == (2, 2, True)


def test_a_refused_request_counts_as_done_on_the_bar(llm, monkeypatch):
    made: list = []
    monkeypatch.setattr(llm_module, "tqdm", lambda **kw: _Bar(made, **kw))
    too_long = [5] * (llm.engine.max_model_len + 8)
    outs = llm.generate([[5, 6, 7], too_long], SamplingParams(temperature=0, max_tokens=3), use_tqdm=True)
    assert [o.finish_reason for o in outs] == ["length", "error"]
    assert (made[0].total, made[0].done, made[0].closed) == (2, 2, True)
