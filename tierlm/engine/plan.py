"""`StepPlan`: everything a worker does in one step, as plain data the controller can send anywhere.

The scheduler (the single controller) decides; the plan says what to execute: the batch (rows, prefix and
new-token counts, prompt tokens), the request→token table writes, which tokens to sample, the host-to-device
loads and device-to-host backups of the cache tiers. It holds only ints, strings and lists, so it packs
with msgpack unchanged (`to_bytes`/`from_bytes`): in one process the engine hands it to its worker
directly; under tensor parallelism the same bytes go to every rank. Completion tickets of backups stay with
the controller and are passed beside the plan, never inside it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from itertools import accumulate
from typing import Optional

import msgpack

from tierlm.engine.request import Req
from tierlm.kvcache.contracts import StepCopies

MODES = ("prefill", "decode", "copies")  # "copies": no forward, only the tier copies
FROM_TABLE = -1  # an `input_ids` entry read on the device from the token table (a decode request's next input)


@dataclass
class StepPlan:
    """One step. Request i (row `rows[i]`) has KV for its first `prefix_lens[i]` tokens and this pass adds
    `extend_lens[i]`; prefill passes carry their new tokens in `input_ids` (decode reads them on the device).
    A mixed step runs as a prefill (extend) pass whose decode requests add one token each, marked FROM_TABLE
    in `input_ids`: the sampler of an earlier step wrote it to the device token table, possibly still in
    flight on the host side (overlap scheduling).
    Sampling site j is the token at flat index `sample_index[j]`, written to (`sample_rows[j]`,
    `sample_positions[j]`) of the token table. A decode plan samples every request (its one token ends its
    sequence), so its sites are implicit and its three sample lists empty: site j is request j, written to
    (`rows[j]`, `prefix_lens[j] + 1`). Backups are (device pages, host pages, L3 keys or None)."""

    mode: str
    rows: list[int] = field(default_factory=list)
    prefix_lens: list[int] = field(default_factory=list)
    extend_lens: list[int] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    table_rows: list[int] = field(default_factory=list)
    table_positions: list[int] = field(default_factory=list)
    table_slots: list[int] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    sample_positions: list[int] = field(default_factory=list)
    sample_index: list[int] = field(default_factory=list)
    load_host: list[int] = field(default_factory=list)
    load_device: list[int] = field(default_factory=list)
    backups: list[tuple[list[int], list[int], Optional[list[str]]]] = field(default_factory=list)
    # prompt logprobs (`engine.prompt_logprobs`): flat token indices of the pass to score, the token after each,
    # and the most alternatives any of them asks for
    score_index: list[int] = field(default_factory=list)
    score_targets: list[int] = field(default_factory=list)
    score_top: int = 0
    fence: int = -1  # >= 0: the forward and loads wait for the backups numbered up to it (`StepCopies.fence`)
    backup_seq: int = -1  # the number of the first of `backups` (`Ticket.seq`; the others follow in order)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown step mode {self.mode!r}")

    @property
    def num_tokens(self) -> int:
        return sum(self.extend_lens)

    @property
    def num_sites(self) -> int:
        """Tokens this plan samples."""
        return len(self.rows) if self.mode == "decode" else len(self.sample_index)

    @property
    def has_forward(self) -> bool:
        return self.mode != "copies" and bool(self.rows)

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "StepPlan":
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        names = {f.name for f in fields(cls)}
        plan = cls(**{k: v for k, v in doc.items() if k in names})
        plan.backups = [(list(d), list(h), None if k is None else list(k)) for d, h, k in plan.backups]
        return plan


def make_plan(mode: str, reqs: list[Req], extend_lens: list[int], writes: tuple[list[int], list[int], list[int]],
              copies: StepCopies) -> tuple[StepPlan, list[Req]]:
    """The plan of a scheduled batch (`reqs` may be empty: a copies-only step); also returns the requests
    that sample in it (those whose pass reaches the end of their sequence). A "mixed" batch becomes a
    prefill plan in which its decode requests read their input from the token table."""
    rows = [r.row for r in reqs]
    prefix = [r.kv_len for r in reqs]
    input_ids: list[int] = []
    # a pass that reaches the end of its sequence samples the next token: in a decode pass every request (its one
    # token is the last of its sequence), so its sites stay implicit (`StepPlan`)
    if mode == "decode":
        sites, sampling, seqs, ends = (), list(reqs), [], []
    else:
        seqs = [len(r.token_ids) + r.num_pending for r in reqs]  # `Req.seq_len`, spelled out
        ends = list(accumulate(extend_lens))
        sites = [i for i, (p, n, s) in enumerate(zip(prefix, extend_lens, seqs)) if p + n == s]
        sampling = [reqs[i] for i in sites]
        for r, p, n in zip(reqs, prefix, extend_lens):
            # a decodable request's input may not have reached the host yet (num_pending)
            input_ids += [FROM_TABLE] if mode == "mixed" and r.decodable else r.token_ids[p:p + n]
    if mode == "mixed":
        mode = "prefill"
    plan = StepPlan(mode=mode if reqs else "copies", rows=rows, prefix_lens=prefix, extend_lens=list(extend_lens),
                    input_ids=input_ids, table_rows=writes[0], table_positions=writes[1], table_slots=writes[2],
                    sample_rows=[rows[i] for i in sites], sample_positions=[seqs[i] for i in sites],
                    sample_index=[ends[i] - 1 for i in sites], load_host=copies.load_host,
                    load_device=copies.load_device,
                    backups=[(c.device_pages, c.host_pages, c.keys) for c in copies.backups], fence=copies.fence,
                    backup_seq=copies.backups[0].ticket.seq if copies.backups else -1)
    return plan, sampling
