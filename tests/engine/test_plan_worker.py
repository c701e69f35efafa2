"""Step plans are plain data: a plan packed with msgpack and executed by a second worker built from the same
weights gives the logits the engine's own worker computed."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.engine.plan import FROM_TABLE, StepPlan
from tierlm.engine.worker import Worker
from tierlm.sampling_params import SamplingParams


def test_a_decode_plan_leaves_its_sites_implicit(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    for i in range(3):
        engine.add_request(str(i), [1, 2, 3 + i], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    plans = []
    execute = engine.worker.execute
    engine.worker.execute = lambda plan, tickets=None: plans.append(plan) or execute(plan, tickets)
    while engine.has_unfinished():
        engine.step()
    decodes = [p for p in plans if p.mode == "decode"]
    assert decodes and all(not (p.sample_rows or p.sample_positions or p.sample_index) for p in decodes)
    assert [p.num_sites for p in decodes] == [len(p.rows) for p in decodes]
    assert all(p.num_sites == len(p.sample_index) > 0 for p in plans if p.mode == "prefill")


def test_plan_roundtrip_keeps_every_field():
    plan = StepPlan(mode="prefill", rows=[3], prefix_lens=[4], extend_lens=[2], input_ids=[7, 8],
                    table_rows=[3, 3], table_positions=[4, 5], table_slots=[20, 21], sample_rows=[3],
                    sample_positions=[6], sample_index=[1], load_host=[5], load_device=[9],
                    backups=[([1, 2], [3, 4], ["ab" * 32, "cd" * 32]), ([6], [7], None)], fence=3, backup_seq=5)
    assert StepPlan.from_bytes(plan.to_bytes()) == plan


@pytest.mark.parametrize("mixed", [False, True])
def test_second_worker_replays_serialized_plans(tiny_qwen3, mixed):
    """With mixed steps, the decode requests of a prefill plan read their inputs from the twin's own token
    table (FROM_TABLE), where the twin's sampled tokens went."""
    config = EngineConfig(model=str(tiny_qwen3), **CPU_OPTS, max_prefill_tokens=4, enable_mixed_chunk=mixed)
    engine = Engine(config)
    twin = Worker(config, engine.model_dir, engine.model_config, engine.max_model_len,
                  engine.max_model_len + config.page_size)
    seen: list[tuple[bytes, torch.Tensor]] = []
    execute = engine.worker.execute

    def recording(plan, tickets=None):
        out = execute(plan, tickets)
        if out is not None:
            seen.append((plan.to_bytes(), out[0].clone()))
        return out

    engine.worker.execute = recording
    for i, prompt in enumerate(([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 11, 12])):
        engine.add_request(str(i), prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    plans = [StepPlan.from_bytes(b) for b, _ in seen]
    assert {"prefill", "decode"} <= {p.mode for p in plans}
    assert any(FROM_TABLE in p.input_ids for p in plans) == mixed
    for data, logits in seen:
        plan = StepPlan.from_bytes(data)
        got = twin.execute(plan)
        assert got is not None
        twin_logits, sites, _ = got
        assert torch.equal(twin_logits, logits), f"{plan.mode} step differs"
        twin.store_tokens(sites, twin_logits.argmax(-1))  # greedy: the tokens the engine sampled


def test_pass_metadata_starts_on_16_byte_boundaries(tiny_qwen3):
    """Triton compiles a kernel again for each 16-byte alignment of a pointer argument, so every index
    tensor of a pass (slices of one packed upload) must start aligned whatever the batch's sizes are."""
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    worker = engine.worker
    plan = StepPlan(mode="prefill", rows=[0, 1, 2], prefix_lens=[0, 0, 0], extend_lens=[3, 2, 1],
                    input_ids=[5, 6, 7, 8, 9, 10], table_rows=[0] * 3 + [1] * 2 + [2],
                    table_positions=[0, 1, 2, 0, 1, 0], table_slots=[1, 2, 3, 4, 5, 6], sample_rows=[0, 1, 2],
                    sample_positions=[3, 2, 1], sample_index=[2, 4, 5])
    batch, sites = worker.runner.build_batch(plan, worker.tables)
    for name in ("positions", "req_rows", "prefix_lens", "seq_lens", "qo_indptr"):
        assert getattr(batch, name).data_ptr() % 16 == 0, name
    assert batch.qo_indptr.tolist() == [0, 3, 5, 6] and batch.seq_lens.tolist() == [3, 2, 1]
    assert sites.index.tolist() == [2, 4, 5] and batch.input_ids.tolist() == [5, 6, 7, 8, 9, 10]


def test_replayed_decode_pass_uploads_only_what_its_graph_reads(tiny_qwen3):
    """A decode pass that a captured graph will replay carries rows, positions and lengths only (the graph's
    staging launch writes the new table entries, then gathers its inputs and slots from the tables); an eager
    decode pass gathers them itself."""
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    runner, tables = engine.worker.runner, engine.worker.tables
    tables.token_ids[1, 4], tables.token_ids[2, 2] = 41, 42
    tables.table[1, 4], tables.table[2, 2] = 9, 7
    plan = StepPlan(mode="decode", rows=[1, 2], prefix_lens=[4, 2], extend_lens=[1, 1])
    assert plan.num_sites == 2, "a decode plan samples every request; its sites are implicit"
    batch, sites = runner.build_batch(plan, tables)
    assert batch.input_ids.tolist() == [41, 42] and batch.out_loc.tolist() == [9, 7]
    assert (sites.rows.tolist(), sites.positions.tolist(), sites.index.tolist(), sites.count) == ([1, 2], [5, 3],
                                                                                                   [0, 1], 2)
    assert batch.qo_indptr.tolist() == [0, 1, 2] and batch.qo_indptr.data_ptr() % 16 == 0

    class Graphs:  # a graph runner's surface: which sizes it replays, and the launch that loads its buffers
        def __init__(self):
            self.staged = []

        @staticmethod
        def fits(batch_size):
            return batch_size <= 8

        @staticmethod
        def variant_for(seq_lens):  # the attention launch the step takes, chosen before its buffers are loaded
            return 3 if seq_lens == [5, 3] else 0

        def stage(self, rows, positions, seq_lens, writes, variant):
            self.staged.append([t.tolist() for t in (rows, positions, seq_lens, *writes)] + [variant])

    runner.graphs = graphs = Graphs()
    plan.table_rows, plan.table_positions, plan.table_slots = [2], [2], [13]  # request 2's token starts a page
    batch, _ = runner.build_batch(plan, tables)
    assert batch.req_rows.tolist() == [1, 2] and batch.positions.tolist() == [4, 2]
    assert batch.seq_lens.tolist() == [5, 3] and batch.input_ids.numel() == batch.out_loc.numel() == 0
    # the graph's launch gets the new page's entry to write before it reads the slots; the table is not written here
    assert graphs.staged == [[[1, 2], [4, 2], [5, 3], [2], [2], [13], 3]] and int(tables.table[2, 2]) == 7
    assert batch.variant == 3  # the replay takes the launch the buffers were loaded for
