"""`LatentForms`: which extend requests of a latent-attention model run decompressed, per `--mla-extend-form`."""
from __future__ import annotations

import pytest

from tierlm.attention.mla_up_proj import LatentForms, LatentUpProj

# DeepSeek-V2-Lite's heads: 16 x (128 nope + 64 rope) keys, 128-wide values, 512 latents
V2_LITE = LatentUpProj([], num_heads=16, nope_dim=128, rope_dim=64, v_head_dim=128, kv_lora_rank=512)


def _decompresses(forms: LatentForms, new: int, prefix: int = 0) -> bool:
    seq = prefix + new
    return forms.decompresses(new, seq, V2_LITE.decompressed_elements(seq))


@pytest.mark.parametrize(("new", "prefix", "expected"), [
    (2048, 0, True),  # a 2K-token prompt: the smallest that decompresses
    (2047, 0, False),
    (1500, 0, False),  # the prompts of a short served mix stay absorbed
    (1, 8191, False),  # one token on a long prefix: decode-like
    (512, 8192, True),  # a chunk over a long prefix
    (16384, 0, True),
    (32768, 0, False),  # its keys and values over 2^28 elements
])
def test_auto_decompresses_long_extends_within_the_cap(new: int, prefix: int, expected: bool) -> None:
    assert _decompresses(LatentForms.named("auto"), new, prefix) is expected


def test_absorbed_and_decompressed_are_every_request_or_none() -> None:
    absorbed, decompressed = LatentForms.named("absorbed"), LatentForms.named("decompressed")
    assert not any(_decompresses(absorbed, n) for n in (1, 2048, 16384))
    assert all(_decompresses(decompressed, n) for n in (1, 2, 2048, 16384))
    assert not _decompresses(decompressed, 32768)  # the cap holds for every form


def test_unknown_form_is_refused() -> None:
    with pytest.raises(KeyError):
        LatentForms.named("sideways")
