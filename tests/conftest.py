"""Shared test settings: a fixed random seed for every test, and a private medattn3d cache folder (converted
OpenVINO models) so tests never write into the user's ~/.cache."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path_factory.mktemp("medattn3d-cache")))
        yield
