"""Block-wise whole-volume work: the same results however the work is cut into blocks and spread over threads."""

from __future__ import annotations

import pytest
import torch

from medattn3d.data import blocks
from medattn3d.data.resample import linear_resample
from medattn3d.outputs.prediction import channel_argmax


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of a few hundred bytes, two torch threads: many blocks, run on the pool."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 300)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_blocks_give_the_same_resampling_and_argmax(tiny_blocks, monkeypatch):
    image = torch.randn(3, 17, 12, 9, generator=torch.Generator().manual_seed(0))
    scale, offset, size = (0.6, 1.4, 0.8), (0.0, -0.5, 0.3), (27, 8, 11)
    blocked = linear_resample(image, scale, offset, size)
    argmax = channel_argmax(blocked)
    assert torch.get_num_threads() == 2  # restored after the pool ran
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 1 << 30)  # one block per channel: the plain whole-volume ops
    assert torch.equal(blocked, linear_resample(image, scale, offset, size))
    assert torch.equal(argmax[0].long(), torch.argmax(blocked, dim=0))


def test_a_failing_block_raises_after_the_others_ran(tiny_blocks):
    done = []

    def fail():
        raise ValueError("block failed")

    jobs = [lambda: done.append(1), fail, lambda: done.append(2)]
    with pytest.raises(ValueError, match="block failed"):
        blocks.run_blocks(jobs)
    assert sorted(done) == [1, 2] and torch.get_num_threads() == 2


def test_nested_calls_run_inline(tiny_blocks):
    seen = []
    blocks.run_blocks([lambda: blocks.run_blocks([lambda: seen.append(torch.get_num_threads())] * 2)] * 2)
    assert seen == [1, 1, 1, 1]  # inner calls ran on the pool's threads, one torch thread each


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int16])
def test_copy_blocked_reorders_memory_exactly(tiny_blocks, dtype):
    source = (torch.randn(19, 7, 5, 37, generator=torch.Generator().manual_seed(3)) * 50).to(dtype)
    column_major = source.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    row_major = blocks.copy_blocked(torch.empty(source.shape, dtype=dtype), column_major)
    assert row_major.is_contiguous() and torch.equal(row_major, source)
    with pytest.raises(ValueError, match="differs"):
        blocks.copy_blocked(torch.empty(3, 3, dtype=dtype), source)
