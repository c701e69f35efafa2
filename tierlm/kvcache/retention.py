"""`HostRetention`: which host (L2) copies go first when the host tier needs room.

Least recently used fails one common pattern completely: conversations (or agents, or documents) that come
back in turn, each after all the others, when the device and host tiers together hold fewer of them than
come around. LRU then evicts, every time, the prefix that is about to come back, and the host tier serves
no hit at all. Keeping what is already held instead, and giving up first the copies that nobody has used
since they were made (newest of those first), keeps a fixed part of the cycle and serves it every round
("reused"): the insertion policy of a scan-resistant cache. So that what it keeps does not stay forever
once the workload moves on, a copy unused for `AGE_PERIODS` periods (a period: a capacity's worth of
prompt blocks) goes before all others. Where recency pays (a prefix comes back soon after it was made, or
a new hot prefix replaces an old one), the rule still loses, so neither order is right everywhere.

`adaptive` runs both as shadows: metadata-only models of a cache as large as the device and host tiers
together, fed with every admitted prompt in blocks of `BLOCK_TOKENS` tokens (a chained hash per block, so
that a prompt costs one hash per block, whatever the page size). A block one shadow holds and the other
does not moves a saturating counter towards the first, and the host tier follows the policy the counter
favours (with a margin, so that it does not flip on noise). `lru` keeps least recently used.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Sequence

from tierlm.kvcache.radix import RadixNode

POLICIES = ("lru", "adaptive")
BLOCK_TOKENS = 64  # the shadows' unit
SWITCH_SHARE = 0.25  # evidence that flips the order: this share of the capacity, in blocks (the counter holds
# at most the capacity: an old lesson is unlearnt after a capacity's worth of blocks)
AGE_PERIODS = 4  # a copy unused for this many periods (of a capacity's worth of blocks each) goes first


def reused(node: RadixNode) -> bool:
    """The node was matched after its host copy was made."""
    return node.last_access > node.host_since


class ShadowLRU:
    """Which blocks an LRU cache of `capacity` blocks would hold."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.blocks = capacity, OrderedDict()

    def access(self, block: int, period: int = 0) -> bool:
        if block in self.blocks:
            self.blocks.move_to_end(block)
            return True
        self.blocks[block] = None
        if len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return False


class ShadowReused:
    """Which blocks the `reused` order would hold in a cache of `capacity` blocks: a block used again moves
    to the protected list (least recently used order). Room is made by dropping, in turn: the oldest block
    not used in the last `AGE_PERIODS` periods, `period` included (of either list), the newest block never
    used again, the protected list's oldest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.fresh: OrderedDict[int, int] = OrderedDict()  # block -> period it came in (oldest first)
        self.protected: OrderedDict[int, int] = OrderedDict()  # block -> period of its last use (oldest first)

    def access(self, block: int, period: int = 0) -> bool:
        if block in self.protected:
            self.protected.move_to_end(block)
            self.protected[block] = period
            return True
        if block in self.fresh:
            del self.fresh[block]
            self.protected[block] = period
            return True
        if len(self.fresh) + len(self.protected) >= self.capacity:
            self._drop(period - AGE_PERIODS + 1)
        self.fresh[block] = period
        return False

    def _drop(self, stale_before: int) -> None:
        for stock in (self.fresh, self.protected):
            if stock and next(iter(stock.values())) < stale_before:
                stock.popitem(last=False)
                return
        (self.fresh if self.fresh else self.protected).popitem(last=bool(self.fresh))


class HostRetention:
    """The host tier's eviction order (`key`, smaller goes first) under `policy` ("lru" or "adaptive", see
    the module doc). `capacity_pages` is what the device and host tiers hold together; `clock()` is the
    radix tree's (what `last_access` and `host_since` count). `epoch` changes whenever `key` may change
    other than by a node's use (a flip of order, a new period under the reused order): the host tier's
    candidate heap is rebuilt then."""

    def __init__(self, policy: str, capacity_pages: int, page_size: int, clock: Callable[[], int] = lambda: 0
                 ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"--hicache-eviction-policy: unknown policy {policy!r} (choose from "
                             f"{', '.join(POLICIES)})")
        self.policy, self.clock = policy, clock
        self.current = "lru"
        self.flips = self.epoch = 0
        self.score = 0  # > 0: the reused order would have held more of the blocks asked for
        self.period_blocks = max(1, capacity_pages * page_size // BLOCK_TOKENS)
        self.limit, self.switch_at = max(self.period_blocks, 64), max(16, int(self.period_blocks * SWITCH_SHARE))
        self.shadows = ((ShadowLRU(self.period_blocks), ShadowReused(self.period_blocks))
                        if policy == "adaptive" else None)
        self.period, self._in_period = 0, 0
        self._starts = deque([0], maxlen=AGE_PERIODS)  # the tree's clock when each recent period began
        self._fetched_for: dict[int, list[RadixNode]] = {}  # request row -> host copies fetched for it

    @property
    def horizon(self) -> int:
        """A use (or a host copy) before this clock is stale."""
        return self._starts[0] if len(self._starts) == AGE_PERIODS else 0

    def key(self, node: RadixNode) -> tuple[int, int]:
        if self.current == "lru":
            return (1, node.last_access)
        was_reused = reused(node)
        if (node.last_access if was_reused else node.host_since) < self.horizon:
            return (-1, node.last_access)  # unused for AGE_PERIODS periods: first, oldest first
        if was_reused:
            return (1, node.last_access)
        return (0, -node.host_since)  # never used since it was made: newest first

    def fetched(self, row: int, host_nodes: Sequence[RadixNode], pages: int) -> None:
        """The last `pages` pages of the `host_nodes` just matched came from L3 for the request in table row
        `row`. Its own uses (this admission, and its release into the tree) are not reuses: the copies count
        as made when it releases them (`released`). Counted as reuses, every copy fetched for a request
        would outrank, under the reused order, the copies the host tier keeps because they came back."""
        nodes = []
        for node in reversed(host_nodes):
            if pages <= 0:
                break
            node.host_since = node.last_access
            nodes.append(node)
            pages -= node.size
        if nodes:
            self._fetched_for[row] = nodes

    def released(self, row: int) -> None:
        """The request in `row` has released its pages: the copies fetched for it start their life now."""
        for node in self._fetched_for.pop(row, ()):
            node.host_since = max(node.host_since, node.last_access)

    def observe(self, tokens: Sequence[int]) -> None:
        """A prompt that was admitted: its whole blocks are accesses, in order."""
        if self.shadows is None:
            return
        lru, kept = self.shadows
        chain, score, n = 0, self.score, 0
        for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
            chain = hash((chain, tuple(tokens[start:start + BLOCK_TOKENS])))
            score += kept.access(chain, self.period) - lru.access(chain, self.period)
            n += 1
        self.score = max(-self.limit, min(self.limit, score))
        want = ("reused" if self.score >= self.switch_at else "lru" if self.score <= -self.switch_at
                else self.current)
        if want != self.current:
            self.current, self.flips, self.epoch = want, self.flips + 1, self.epoch + 1
        self._in_period += n
        if self._in_period >= self.period_blocks:  # a new period: copies may have gone stale
            self.period, self._in_period = self.period + 1, 0
            self._starts.append(self.clock())
            if self.current == "reused":
                self.epoch += 1
