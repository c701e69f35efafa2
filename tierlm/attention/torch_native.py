"""Torch-native attention: gathers each request's K/V through `req_to_token` and runs SDPA. CPU and CUDA."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.kvcache.pool import take_rows


class TorchNativeBackend(AttentionBackend):
    """Reference backend: one SDPA call per request over its cached prefix plus new tokens."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int,
                batch: ForwardBatch) -> torch.Tensor:
        self.wait_kv(layer)
        self.pool.store(layer, batch.out_loc, k=k, v=v)
        bufs = self.pool.layers[layer]
        k_buf, v_buf = bufs["k"], bufs["v"]
        group = self.num_heads // k_buf.shape[1]
        out = torch.empty(q.shape[0], self.num_heads, self.head_dim, dtype=q.dtype, device=q.device)
        start = 0
        for i, n in enumerate(batch.extend_lens_cpu):
            prefix, seq = batch.prefix_lens_cpu[i], batch.seq_lens_cpu[i]
            slots = self.req_to_token[batch.req_rows_cpu[i], :seq].long()
            keys = take_rows(k_buf, slots).to(q.dtype).transpose(0, 1)  # [KVH, S, D]
            vals = take_rows(v_buf, slots).to(q.dtype).transpose(0, 1)
            if group > 1:
                keys = keys.repeat_interleave(group, dim=0)
                vals = vals.repeat_interleave(group, dim=0)
            qi = q[start:start + n].transpose(0, 1)  # [H, n, D]
            mask = None
            if n > 1:
                qpos = torch.arange(prefix, seq, device=q.device)[:, None]
                mask = qpos >= torch.arange(seq, device=q.device)[None, :]
            o = F.scaled_dot_product_attention(qi, keys, vals, attn_mask=mask, scale=self.scale)
            out[start:start + n] = o.transpose(0, 1)
            start += n
        return out.reshape(q.shape[0], self.num_heads * self.head_dim)

    def supports_cuda_graph(self) -> bool:
        return False

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        raise NotImplementedError("the torch attention backend is not captured in CUDA graphs")

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        raise NotImplementedError("the torch attention backend is not captured in CUDA graphs")
