"""`TPGroup`: how heads are split or replicated over ranks, and the shard names of L3 keys."""
from __future__ import annotations

import pytest

from tierlm.parallel.group import TPGroup


def test_kv_heads_split_when_there_are_enough():
    assert [TPGroup(4, r).kv_heads(8) for r in range(4)] == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_kv_heads_replicated_over_consecutive_ranks_when_fewer():
    assert [TPGroup(8, r).kv_heads(2) for r in range(8)] == [(1, 0)] * 4 + [(1, 1)] * 4


def test_uneven_splits_name_the_flag_and_the_quantity():
    with pytest.raises(ValueError, match="--tp-size 3: the number of attention heads \\(4\\)"):
        TPGroup(3, 0).split(4, "the number of attention heads")
    with pytest.raises(ValueError, match="cannot be replicated evenly"):
        TPGroup(6, 0).kv_heads(4)
    with pytest.raises(ValueError, match="rank 2 is outside 0..1"):
        TPGroup(2, 2)


def test_shard_names_are_head_ranges_and_empty_when_unsharded():
    assert TPGroup().shard_name(8) == ""
    assert TPGroup(2, 1).shard_name(8) == "heads4-8of8"
    # replicated heads: ranks holding the same head write the same shard (identical bytes)
    assert TPGroup(4, 0).shard_name(2) == TPGroup(4, 1).shard_name(2) == "heads0-1of2"


def test_collectives_of_one_rank_are_the_identity():
    import torch

    x = torch.arange(6.0).reshape(2, 3)
    tp = TPGroup()
    assert tp.all_reduce(x) is x and tp.all_gather_last(x) is x and tp.broadcast(x) is x
