"""Shared test settings: deterministic seeds, small thread count for 2-core CI machines."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
