"""`KVPool`: the device KV cache, the buffers of a model's `KVLayout` for every layer, addressed by slot."""
from __future__ import annotations

import torch

from tierlm.jit.kv_transfer import byte_pages
from tierlm.kvcache.layout import KVLayout

FP8_E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448, as `kernels.pool_dtype.to_pool` clamps
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """`t` viewed as integers of its element size: indexed reads and writes of integers work for every
    element type on every device (fp8 included) and move the bytes unchanged."""
    return t.view(_BITS[t.element_size()])


def take_rows(buf: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """`buf[slots]`, for any pool dtype."""
    return _bits(buf)[slots].view(buf.dtype)


def put_rows(buf: torch.Tensor, slots: torch.Tensor, values: torch.Tensor) -> None:
    """`buf[slots] = values` rounded to the pool's dtype; fp8 saturates at its largest finite value, as the
    Triton kernels' stores do (torch's own cast to fp8 saturates on the CPU but not on CUDA)."""
    if buf.dtype == torch.float8_e4m3fn:
        values = values.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    _bits(buf)[slots] = _bits(values.to(buf.dtype))


class KVPool:
    """Per layer, one tensor `[num_slots, *shape]` per buffer of the layout (slot = page * page_size + offset).

    The attention backend reads and writes buffers by name (`pool["k"][layer]`); page movers see only
    `regions()`, byte views in page-first order. Page 0 is reserved as a scratch page: padded (dummy)
    requests write there, so no real slot is touched.
    """

    def __init__(self, layout: KVLayout, num_pages: int, page_size: int, device: torch.device) -> None:
        if num_pages < 2:
            raise ValueError(f"KV pool needs at least 2 pages (1 scratch + 1 usable), got {num_pages}")
        self.layout = layout
        self.num_pages = num_pages
        self.page_size = page_size
        self.num_slots = num_pages * page_size
        self.num_layers = layout.num_layers
        self.device = device
        self.layers: list[dict[str, torch.Tensor]] = [
            {b.name: torch.zeros((self.num_slots, *b.shape), dtype=b.torch_dtype, device=device) for b in bufs}
            for bufs in layout.layers]

    def __getitem__(self, name: str) -> list[torch.Tensor]:
        """The buffer `name` of every layer (e.g. `pool["k"][layer]`)."""
        return [bufs[name] for bufs in self.layers]

    def regions(self) -> list[torch.Tensor]:
        """uint8 `[num_pages, page_size * bytes_per_token]` views of every buffer, in page-first order."""
        return [byte_pages(self.layers[layer][b.name], self.num_pages) for layer, b in self.layout.regions()]

    @property
    def layer_sizes(self) -> list[int]:
        """Regions per layer (to copy ranges of layers)."""
        return [len(bufs) for bufs in self.layout.layers]

    @property
    def bytes_per_page(self) -> int:
        return self.layout.page_bytes(self.page_size)

    def store(self, layer: int, slots: torch.Tensor, **values: torch.Tensor) -> None:
        """Write new per-token values (`name=[tokens, *shape]`) into their slots of one layer."""
        bufs = self.layers[layer]
        for name, value in values.items():
            put_rows(bufs[name], slots, value)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for bufs in self.layers for t in bufs.values())
