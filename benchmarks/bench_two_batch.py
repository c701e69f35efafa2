"""Two halves of a decode batch on two CUDA streams: can one half's linears run beside the other's attention?

At large batches a decode step of a small model is mostly decode attention, which reads the KV pool at the HBM
limit, while the step's linears and small kernels each leave most of the device idle for a few microseconds.
This times one decode step of a Qwen3-0.6B-shaped stack (random bf16 weights; the engine's kernels: RMSNorm,
q/k norm + rotary, split-KV decode attention storing the new K/V, SiLU·mul; linears through cuBLAS) for B
requests of random context lengths, each variant captured as one CUDA graph:

- `one`: the whole batch layer by layer, as the engine runs it;
- `halves`: the two halves one after the other on one stream (what halving the linears costs);
- `streams`: the halves on two streams, free to interleave;
- `alternate`: the halves on two streams, each layer's attention of one half ordered after the other half's, so
  attention runs back to back and one half's other kernels run beside the other half's attention;
- `priority` / `pri free`: as `alternate` / `streams`, but each half's attention on a low-priority stream of its
  own and its other kernels on a high-priority one, so those take the SMs that attention programs free first;
- with `--green N`: `alternate` with attention on a green context of N SMs (so the other kernels always find
  SMs free), and attention alone on those N SMs (does it keep its read rate on fewer SMs?);
- `attention` / `rest`: the step's attention alone and everything else alone (sum against `one`, max against the
  overlap variants: what overlap could gain).

    PYTHONPATH=. python benchmarks/bench_two_batch.py [--batches 64,128,256] [--ctx 100 2048] [--layers 28]

Prints ms per step per variant and the largest difference of each variant's output from `one`'s.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from tierlm.kernels.decode_attention import decode_attention
from tierlm.kernels.fused import qk_norm_rope, rmsnorm, silu_mul
from tierlm.kernels.request_splits import choose_max_splits

HIDDEN, HEADS, KV_HEADS, DIM, INTER = 1024, 16, 8, 128, 3072


@dataclass
class Half:
    """One slice of the batch: its rows and the attention scratch it owns."""

    rows: slice
    req_rows: torch.Tensor
    seq_lens: torch.Tensor
    out_loc: torch.Tensor
    positions: torch.Tensor
    mid_o: torch.Tensor
    mid_lse: torch.Tensor


class Stack:
    """Random weights of `layers` decoder layers and a KV pool holding `lens[b]` tokens per request."""

    def __init__(self, layers: int, lens: list[int], dev: torch.device, dtype=torch.bfloat16) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, generator=g) * shape[-1] ** -0.5).to(dev, dtype)

        self.layers = [dict(n1=1 + 0.1 * w(HIDDEN), qkv=w((HEADS + 2 * KV_HEADS) * DIM, HIDDEN), qn=1 + 0.1 * w(DIM),
                            kn=1 + 0.1 * w(DIM), o=w(HIDDEN, HEADS * DIM), n2=1 + 0.1 * w(HIDDEN),
                            gu=w(2 * INTER, HIDDEN), down=w(HIDDEN, INTER)) for _ in range(layers)]
        bs, slots = len(lens), sum(lens) + len(lens)
        self.k = [torch.randn(slots, KV_HEADS, DIM, generator=g).to(dev, dtype) for _ in range(layers)]
        self.v = [torch.randn(slots, KV_HEADS, DIM, generator=g).to(dev, dtype) for _ in range(layers)]
        width = max(lens) + 1
        table = torch.zeros(bs, width, dtype=torch.int32)
        start = 0
        for b, n in enumerate(lens):
            table[b, :n + 1] = torch.arange(start, start + n + 1, dtype=torch.int32)
            start += n + 1
        self.table = table.to(dev)
        self.lens = torch.tensor([n + 1 for n in lens], dtype=torch.int32, device=dev)
        self.out_loc = self.table[torch.arange(bs, device=dev), self.lens.long() - 1].to(torch.int64)
        pos = torch.arange(4096, dtype=torch.float32)
        inv = 1.0 / (1e6 ** (torch.arange(0, DIM, 2, dtype=torch.float32) / DIM))
        freqs = torch.outer(pos, inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos().to(dev), emb.sin().to(dev)
        self.x0 = torch.randn(bs, HIDDEN, generator=g).to(dev, dtype)
        self.dev = dev

    def half(self, rows: slice, num_sms: int) -> Half:
        n = rows.stop - rows.start
        s = choose_max_splits(n, KV_HEADS, num_sms)
        return Half(rows, torch.arange(rows.start, rows.stop, dtype=torch.int32, device=self.dev),
                    self.lens[rows], self.out_loc[rows], (self.lens[rows] - 1).long(),
                    torch.empty(n, HEADS, s, DIM, dtype=torch.float32, device=self.dev),
                    torch.empty(n, HEADS, s, dtype=torch.float32, device=self.dev))

    def pre(self, i: int, x: torch.Tensor, res, h: Half):
        """Layer i up to attention: (q, k, v, residual)."""
        L = self.layers[i]
        y, r = rmsnorm(x, L["n1"], 1e-6, res)
        res = x if r is None else r
        qkv = y @ L["qkv"].t()
        q, k = qk_norm_rope(qkv, h.positions, self.cos, self.sin, HEADS, KV_HEADS, DIM, L["qn"], L["kn"])
        v = qkv[:, (HEADS + KV_HEADS) * DIM:].view(-1, KV_HEADS, DIM)
        return q, k, v, res

    def attend(self, i: int, q, k, v, h: Half) -> torch.Tensor:
        out = torch.empty_like(q)
        decode_attention(q, self.k[i], self.v[i], self.table, h.req_rows, h.seq_lens, out, h.mid_o, h.mid_lse,
                         DIM ** -0.5, block_n=64, num_warps=4, num_stages=3, new_kv=(k, v, h.out_loc))
        return out.view(q.shape[0], HEADS * DIM)

    def post(self, i: int, a: torch.Tensor, res):
        """Layer i after attention: (x, residual)."""
        L = self.layers[i]
        x = a @ L["o"].t()
        y, res = rmsnorm(x, L["n2"], 1e-6, res)
        return silu_mul(y @ L["gu"].t()) @ L["down"].t(), res


def run_one(st: Stack, h: Half, rest_only: bool = False) -> torch.Tensor:
    x, res = st.x0[h.rows], None
    for i in range(len(st.layers)):
        q, k, v, res = st.pre(i, x, res, h)
        a = q.view(q.shape[0], -1) if rest_only else st.attend(i, q, k, v, h)
        x, res = st.post(i, a, res)
    return x


def run_attention_only(st: Stack, h: Half, qkv_cache) -> torch.Tensor:
    q, k, v = qkv_cache
    for i in range(len(st.layers)):
        a = st.attend(i, q, k, v, h)
    return a


def run_two(st: Stack, halves: tuple[Half, Half], streams, alternate: bool, attn_streams=None) -> torch.Tensor:
    """Both halves, each on its own stream; with `alternate`, attention of layer i runs A then B then A(i+1)...;
    with `attn_streams`, each half's attention runs on a stream of its own (created at a lower priority), its
    other kernels on `streams` (higher priority), so they take the SMs attention programs free first."""
    main = torch.cuda.current_stream()
    outs = [None, None]
    fork = torch.cuda.Event()
    fork.record(main)
    for s in streams + (attn_streams or ()):
        s.wait_event(fork)
    state = [(st.x0[h.rows], None) for h in halves]
    done_attn = [None, None]

    def after(src, dst):
        ev = torch.cuda.Event()
        ev.record(src)
        dst.wait_event(ev)

    for i in range(len(st.layers)):
        for j, (h, s) in enumerate(zip(halves, streams)):
            sa = attn_streams[j] if attn_streams else s
            with torch.cuda.stream(s):
                x, res = state[j]
                q, k, v, res = st.pre(i, x, res, h)
            if sa is not s:
                after(s, sa)
            with torch.cuda.stream(sa):
                if alternate and done_attn[1 - j] is not None:
                    sa.wait_event(done_attn[1 - j])
                a = st.attend(i, q, k, v, h)
                ev = torch.cuda.Event()
                ev.record(sa)
                done_attn[j] = ev
            if sa is not s:
                s.wait_event(ev)
            with torch.cuda.stream(s):
                state[j] = st.post(i, a, res)
    for j, s in enumerate(streams):
        outs[j] = state[j][0]
        after(s, main)
    for s in attn_streams or ():
        after(s, main)
    return torch.cat(outs)


def graph_ms(fn, reps: int = 50) -> tuple[float, torch.Tensor]:
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2], out


def green_row(st: Stack, whole: Half, halves: tuple[Half, Half], high, qkv, sms: int, ref: torch.Tensor) -> str:
    """`alternate` with both halves' attention on one stream of a green context of `sms` SMs (the rest on
    `high`, free to use every SM), and the whole batch's attention alone on that context."""
    try:
        from torch.cuda.green_contexts import GreenContext
        ctx = GreenContext.create(num_sms=sms, device_id=torch.cuda.current_device())
        g = ctx.Stream()
        t_two, out = graph_ms(lambda: run_two(st, halves, high, alternate=True, attn_streams=(g, g)))
        main = torch.cuda.current_stream()

        def attention_there():
            g.wait_stream(main)
            with torch.cuda.stream(g):
                a = run_attention_only(st, whole, qkv)
            main.wait_stream(g)
            return a

        t_attn, _ = graph_ms(attention_there)
        diff = (out.float() - ref.float()).abs().max().item()
        return (f"       green context of {sms} SMs: alternate {t_two:.3f}, attention alone {t_attn:.3f} "
                f"(diff {diff:.1e})")
    except Exception as exc:  # an API or capture this torch or driver lacks: report it, keep the other rows
        return f"       green context of {sms} SMs: failed: {type(exc).__name__}: {str(exc)[:200]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,128,256")
    ap.add_argument("--ctx", type=int, nargs=2, default=(100, 2048))
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--green", default="", help="SM counts (comma-separated) for attention's green context: each "
                    "runs `alternate` with attention on that many SMs, and attention alone there")
    ap.add_argument("--skip-streams", action="store_true", help="time only one, halves, attention, rest (and "
                    "--green's rows); the two-stream columns print nan")
    args = ap.parse_args()
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}; ms per step (graph replay median)")
    print(f"{'batch':>6} {'one':>8} {'halves':>8} {'streams':>8} {'alternate':>10} {'priority':>9} {'pri free':>9}"
          f" {'attention':>10} {'rest':>8}   max |diff| streams / alternate / priority")
    for bs in [int(b) for b in args.batches.split(",")]:
        g = torch.Generator().manual_seed(bs)
        lens = torch.randint(args.ctx[0], args.ctx[1] + 1, (bs,), generator=g).tolist()
        st = Stack(args.layers, lens, dev)
        whole = st.half(slice(0, bs), sms)
        a, b = st.half(slice(0, bs // 2), sms), st.half(slice(bs // 2, bs), sms)
        streams = (torch.cuda.Stream(), torch.cuda.Stream())
        t_one, o_one = graph_ms(lambda: run_one(st, whole))
        t_halves, o_halves = graph_ms(lambda: torch.cat([run_one(st, a), run_one(st, b)]))
        lo, hi = torch.cuda.Stream.priority_range()  # (lowest, highest): numerically, higher priority is lower
        high = (torch.cuda.Stream(priority=hi), torch.cuda.Stream(priority=hi))
        low = (torch.cuda.Stream(priority=lo), torch.cuda.Stream(priority=lo))

        def timed(fn):
            return (float("nan"), o_halves) if args.skip_streams else graph_ms(fn)

        t_streams, o_streams = timed(lambda: run_two(st, (a, b), streams, alternate=False))
        t_alt, o_alt = timed(lambda: run_two(st, (a, b), streams, alternate=True))
        t_pri, o_pri = timed(lambda: run_two(st, (a, b), high, alternate=True, attn_streams=low))
        t_pri_free, _ = timed(lambda: run_two(st, (a, b), high, alternate=False, attn_streams=low))
        qkv = st.pre(0, st.x0, None, whole)[:3]
        t_attn, _ = graph_ms(lambda: run_attention_only(st, whole, qkv))
        t_rest, _ = graph_ms(lambda: run_one(st, whole, rest_only=True))
        d_s = (o_streams.float() - o_halves.float()).abs().max().item()
        d_a = (o_alt.float() - o_halves.float()).abs().max().item()
        d_one = (o_halves.float() - o_one.float()).abs().max().item()
        d_p = (o_pri.float() - o_halves.float()).abs().max().item()
        print(f"{bs:>6} {t_one:>8.3f} {t_halves:>8.3f} {t_streams:>8.3f} {t_alt:>10.3f} {t_pri:>9.3f}"
              f" {t_pri_free:>9.3f}"
              f" {t_attn:>10.3f} {t_rest:>8.3f}   {d_s:.2e} / {d_a:.2e} / {d_p:.2e} (halves vs one {d_one:.2e})")
        for sms_attn in [int(n) for n in args.green.split(",") if n]:
            print(green_row(st, whole, (a, b), high, qkv, sms_attn, o_halves))
        del st, whole, a, b, qkv, o_one, o_halves, o_streams, o_alt, o_pri
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
