"""A step's metadata kernels (`tierlm.kernels.step_metadata`) against torch indexing, on the GPU or under the
Triton interpreter: the token and slot scatters, a decode graph's and a captured mixed pass's padded inputs, and
a pass's per-token inputs expanded from its requests (the kernel and the torch path against a Python loop)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.kernels.step_metadata import pad_decode_inputs, pad_mixed_inputs, scatter_2d
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)

    # scatters: int32 (as uploaded) and int64 indices; int64 values narrowed to the int32 table; counts of one, of
    # more than a block and none
    for n, index_dtype in ((1, torch.int32), (300, torch.int32), (17, torch.int64), (0, torch.int32)):
        table = torch.randint(-5, 5, (40, 50), generator=gen, dtype=torch.int32).to(dev)
        want = table.clone()
        flat = torch.randperm(40 * 50, generator=gen)[:n]  # distinct (row, col) pairs
        rows, cols = (flat // 50).to(index_dtype), (flat % 50).to(index_dtype)
        values = torch.randint(0, 2**31 - 1, (n,), generator=gen, dtype=torch.int64)
        want[rows.long(), cols.long()] = values.to(torch.int32).to(dev)
        scatter_2d(table, rows.to(dev), cols.to(dev), values.to(dev))
        assert torch.equal(table, want), (n, index_dtype)
    view = torch.zeros(6, 64, dtype=torch.int32, device=dev)[:, :8]  # a row stride other than the width
    scatter_2d(view, torch.tensor([5, 0], device=dev), torch.tensor([7, 1], device=dev),
               torch.tensor([11, 12], device=dev))
    assert view[5, 7] == 11 and view[0, 1] == 12 and int(view.sum()) == 23

    # the graph's inputs: n real entries copied (positions widened to int64), n..size the dummy request, every
    # entry's input id and slot read from the tables at its row and position, the rest of the static buffers
    # untouched
    table = torch.randint(0, 2**31 - 1, (100, 4001), generator=gen, dtype=torch.int32).to(dev)
    token_ids = torch.randint(0, 150_000, (100, 4001), generator=gen, dtype=torch.int32).to(dev)
    for n, size in ((1, 1), (3, 8), (300, 304), (5, 5)):
        rows = torch.randint(0, 99, (n,), generator=gen, dtype=torch.int32).to(dev)
        pos = torch.randint(0, 4000, (n,), generator=gen, dtype=torch.int32).to(dev)
        lens = pos + 1
        r_dst = torch.full((320,), -7, dtype=torch.int32, device=dev)
        p_dst, l_dst = torch.full((320,), -7, dtype=torch.int64, device=dev), r_dst.clone()
        i_dst, s_dst, x_dst = p_dst.clone(), p_dst.clone(), r_dst.clone()
        # the step's new table entries: every real row's own (as a token starting a page has), and 500 others,
        # more than a block; written before any slot is read, in the same launch
        others = torch.randperm(100 * 4001, generator=gen)[:500].to(dev)
        keep = ~torch.isin(others, rows.long() * 4001 + pos.long())
        w_rows = torch.cat([rows, (others[keep] // 4001).int()])
        w_pos = torch.cat([pos, (others[keep] % 4001).int()])
        w_slots = torch.randint(0, 2**31 - 1, (w_rows.numel(),), generator=gen, dtype=torch.int32).to(dev)
        before = table.clone()
        table_want = table.clone()
        table_want[w_rows.long(), w_pos.long()] = w_slots
        pad_decode_inputs((rows, pos, lens), (r_dst, p_dst, l_dst, i_dst, s_dst, x_dst), table, token_ids, size, 99,
                          (w_rows, w_pos, w_slots))
        assert torch.equal(table, table_want) and not torch.equal(before, table_want)
        assert torch.equal(r_dst[:n], rows) and torch.equal(p_dst[:n], pos.long()) and torch.equal(l_dst[:n], lens)
        assert (r_dst[n:size] == 99).all() and (p_dst[n:size] == 0).all() and (l_dst[n:size] == 1).all()
        at_rows, at_pos = r_dst[:size].long(), p_dst[:size]
        assert torch.equal(i_dst[:size], token_ids[at_rows, at_pos].long())
        assert torch.equal(s_dst[:size], table[at_rows, at_pos].long())
        assert torch.equal(x_dst[:size].long(), p_dst[:size])  # prefix lengths: the positions
        for buf in (r_dst, p_dst, l_dst, i_dst, s_dst, x_dst):
            assert (buf[size:] == -7).all()

    # a captured mixed or prefill pass's inputs, against the torch moves they replace (every static buffer whole,
    # padding and untouched entries included): chunks only; chunks and decodes; no real chunk beside decodes; the
    # decodes filling their captured size; a chunk count at the captured maximum
    def torch_moves(src, dst, t, d, e, base, n, c, size, dummy_row, dummy_slot):
        ids, positions, out_loc, req_rows, prefix_lens, seq_lens, qo_indptr = src
        b_ids, b_pos, b_loc, b_rows, b_prefix, b_seq, b_qo = dst
        for buf, x in ((b_ids, ids), (b_pos, positions), (b_loc, out_loc)):
            buf[:t] = x[:t]
        b_pos[t:base] = 0
        b_loc[t:base] = dummy_slot
        b_rows[:e] = req_rows[:e]
        b_rows[e:c] = dummy_row
        b_prefix[:e] = prefix_lens[:e]
        b_prefix[e:c] = 0
        b_qo[:e + 1] = qo_indptr[:e + 1]
        b_qo[e + 1:] = t
        if size:
            for buf, x in ((b_ids, ids), (b_pos, positions), (b_loc, out_loc)):
                buf[base:base + d] = x[t:]
            b_pos[base + d:n] = 0
            b_loc[base + d:n] = dummy_slot
            b_rows[c:c + d] = req_rows[e:]
            b_rows[c + d:c + size] = dummy_row
            b_seq[c:c + d] = seq_lens[e:]
            b_seq[c + d:c + size] = 1
            b_prefix[c:c + size] = b_seq[c:c + size] - 1

    for lens, d, n, c, size in (([5, 17, 1], 0, 32, 4, 0), ([40, 3], 7, 80, 4, 16), ([], 5, 32, 4, 16),
                                ([9], 16, 48, 8, 16), ([2] * 6, 300, 600, 6, 304)):
        e, t = len(lens), sum(lens)
        base = n - size
        i64 = dict(dtype=torch.int64)
        ids = torch.randint(0, 1000, (t + d,), generator=gen, **i64)
        positions = torch.randint(0, 4000, (t + d,), generator=gen, **i64)
        out_loc = torch.randint(0, 9000, (t + d,), generator=gen, **i64)
        req_rows = torch.randint(0, 90, (e + d,), generator=gen, dtype=torch.int32)
        seq_lens = torch.randint(1, 500, (e + d,), generator=gen, dtype=torch.int32)
        prefix_lens = seq_lens - torch.tensor(lens + [1] * d, dtype=torch.int32)
        qo_indptr = torch.tensor([0] + lens + [1] * d, dtype=torch.int32).cumsum(0).to(torch.int32)
        src = tuple(x.to(dev) for x in (ids, positions, out_loc, req_rows, prefix_lens, seq_lens, qo_indptr))
        reqs = c + 320
        shapes = ((n + 8, torch.int64), (n + 8, torch.int64), (n + 8, torch.int64), (reqs, torch.int32),
                  (reqs, torch.int32), (reqs, torch.int32), (c + 1, torch.int32))
        got = tuple(torch.randint(-9, -1, (k,), generator=gen, dtype=dt).to(dev) for k, dt in shapes)
        want = tuple(x.clone() for x in got)
        torch_moves(src, want, t, d, e, base, n, c, size, 97, 11)
        pad_mixed_inputs(src, got, t, d, e, base, n, c, size, 97, 11)
        for name, a, b in zip(("ids", "positions", "out_loc", "rows", "prefix", "seq", "qo"), got, want):
            assert torch.equal(a, b), (lens, d, name, a.tolist(), b.tolist())
    print("ok")
""")


def test_step_metadata_kernels_match_torch():
    run_script(SCRIPT)


EXPAND = textwrap.dedent("""
    import random
    import torch
    from tierlm.kernels.step_metadata import expand_tokens
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rng = random.Random(0)
    FROM = -1
    table = torch.randint(0, 2**31 - 1, (9, 70), dtype=torch.int32).to(dev)
    token_ids = torch.randint(0, 150_000, (9, 70), dtype=torch.int32).to(dev)

    def case(lens, prefix, rows, marked):
        ids, qo = [], [0]
        for n, m in zip(lens, marked):
            ids += [FROM] * n if m else [rng.randrange(0, 150_000) for _ in range(n)]
            qo.append(qo[-1] + n)
        want = ([], [], [])
        for j, n in enumerate(lens):
            for k in range(n):
                pos = prefix[j] + k
                i = qo[j] + k
                want[0].append(int(token_ids[rows[j], pos]) if ids[i] == FROM else ids[i])
                want[1].append(pos)
                want[2].append(int(table[rows[j], pos]))
        i32 = lambda v: torch.tensor(v, dtype=torch.int32, device=dev)
        for kernel in (True, False):
            got = expand_tokens(i32(ids), i32(rows), i32(prefix), i32(qo), table, token_ids, FROM, kernel=kernel)
            assert all(x.dtype == torch.int64 and x.data_ptr() % 16 == 0 for x in got), "an output not 16-byte aligned"
            assert [x.tolist() for x in got] == [list(w) for w in want], (kernel, lens, prefix)
            if all(marked) and set(lens) == {1}:  # a decode pass: one token per request, from the token table
                got = expand_tokens(None, i32(rows), i32(prefix), None, table, token_ids, FROM, kernel=kernel)
                assert [x.tolist() for x in got] == [list(w) for w in want], (kernel, lens, "a decode pass")

    # one prompt; chunks after cached prefixes; a mixed pass's decodes (one token each, from the token table);
    # requests without tokens (at the start, between, at the end); more tokens than a block; one request per token
    case([5], [0], [3], [False])
    case([4, 7, 3], [10, 0, 60], [0, 8, 2], [False, False, False])
    case([6, 1, 1, 1], [2, 30, 41, 68], [1, 4, 5, 6], [False, True, True, True])
    case([0, 3, 0, 0, 2, 0], [0, 5, 0, 0, 9, 0], [7, 1, 7, 7, 6, 7], [False] * 6)
    case([70, 69, 70, 65, 40], [0, 1, 0, 5, 30], [0, 1, 2, 3, 4], [False, False, True, False, False])
    case([1] * 9, [rng.randrange(0, 70) for _ in range(9)], list(range(9)), [True] * 9)
    print("ok")
""")


def test_expanded_token_inputs_match_a_python_loop():
    run_script(EXPAND)
