"""Separable resampling equals torch's grid_sample; FastInverseSpacingd's forward pass and inverse equal MONAI's
Spacingd (values, affine, the applied-operation record), and MONAI's resampler runs only where ours does not apply."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Spacingd, SpatialResample
from monai.utils import TraceKeys

from medattn3d.data.resample import FastInverseSpacingd, axis_aligned_map, linear_resample
from tests.helpers import oblique_affine


def _grid_sample_reference(image: torch.Tensor, scale, offset, size) -> torch.Tensor:
    """Plain (bi/tri)linear grid_sample, border padding, at source index scale*i+offset (voxel centres)."""
    axes = [torch.arange(n, dtype=torch.float64) * s + o for n, s, o in zip(size, scale, offset, strict=True)]
    normalised = [(2 * a + 1) / n - 1 for a, n in zip(axes, image.shape[1:], strict=True)]
    grid = torch.stack(torch.meshgrid(*normalised, indexing="ij")[::-1], dim=-1)  # grid_sample wants x, y(, z)
    out = F.grid_sample(image[None].double(), grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].float()


@pytest.mark.parametrize(
    ("shape", "scale", "offset", "size"),
    [
        ((3, 20, 17, 9), (0.53, 0.61, 1.25), (0.0, -0.4, 0.3), (38, 28, 7)),  # up, up, down; shifted
        ((2, 30, 31), (1.9, 0.5), (0.7, 0.0), (16, 61)),  # 2D
        ((1, 8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (8, 8, 8)),  # identity
        ((1, 6, 7, 5), (0.8, 1.3, 0.9), (-3.0, 2.5, 4.0), (12, 9, 8)),  # reads far outside: border values
    ],
)
def test_linear_resample_equals_grid_sample(shape, scale, offset, size):
    image = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ours = linear_resample(image, scale, offset, size)
    assert ours.shape == (shape[0], *size)
    torch.testing.assert_close(ours, _grid_sample_reference(image, scale, offset, size), atol=1e-5, rtol=1e-5)


def test_linear_resample_names_a_rank_mismatch():
    with pytest.raises(ValueError, match="3 entries"):
        linear_resample(torch.zeros(1, 4, 4, 4), (1.0, 1.0), (0.0, 0.0), (4, 4))


def test_axis_aligned_map_rejects_rotations():
    assert axis_aligned_map(np.diag([0.5, 2.0, 1.0, 1.0])) is not None
    assert axis_aligned_map(oblique_affine(angle=0.3)) is None


def _meta_image(shape, affine, channels=1) -> MetaTensor:
    values = torch.randn((channels, *shape), generator=torch.Generator().manual_seed(1))
    return MetaTensor(values, affine=torch.as_tensor(affine, dtype=torch.float64))


GEOMETRIES = {
    "anisotropic": (np.diag([0.8, 0.7, 2.5, 1.0]), (1.5, 1.5, 2.0), {}),
    "oblique": (oblique_affine(angle=0.4), (1.3, 1.1, 1.7), {}),
    "flipped-axis": (np.diag([-0.9, 0.9, 3.0, 1.0]), (1.0, 1.0, 1.0), {}),
    "align-corners": (np.diag([0.8, 0.7, 2.5, 1.0]), (1.5, 1.5, 2.0), {"align_corners": True}),
    "rotated-to-diagonal": (oblique_affine(angle=0.4), (1.3, 1.1, 1.7), {"diagonal": True}),  # MONAI's fallback
    "nearest": (np.diag([0.8, 0.7, 2.5, 1.0]), (1.5, 1.5, 2.0), {"mode": "nearest"}),  # MONAI's fallback
}


FALLBACKS = {"rotated-to-diagonal", "nearest"}


def _must_not_run(*args, **kwargs):
    raise AssertionError("MONAI's generic resampler ran where the separable one applies")


def _assert_same_forward(ours: MetaTensor, monai: MetaTensor, image, pixdim, options, fallback: bool) -> None:
    """Our forward resampling against MONAI's: same grid, affine and record; values equal to MONAI's float64
    resampling within float32 rounding (MONAI's float32 ``grid_sample`` rounds its coordinates: ~1e-5 off)."""
    assert ours.shape == monai.shape and ours.dtype == monai.dtype == torch.float32
    torch.testing.assert_close(ours.affine, monai.affine, atol=1e-9, rtol=0)
    torch.testing.assert_close(ours.as_tensor(), monai.as_tensor(), atol=5e-5, rtol=1e-5)
    if not fallback:
        reference = Spacingd("image", pixdim=pixdim, dtype=torch.float64, **options)({"image": image.clone()})
        torch.testing.assert_close(ours.as_tensor(), reference["image"].as_tensor(), atol=1e-6, rtol=1e-6)
    (record,), (expected,) = ours.applied_operations, monai.applied_operations
    assert record[TraceKeys.ORIG_SIZE] == expected[TraceKeys.ORIG_SIZE]
    ours_info, monai_info = record[TraceKeys.EXTRA_INFO], expected[TraceKeys.EXTRA_INFO]
    assert {k: str(v) for k, v in ours_info.items() if k != "src_affine"} == {
        k: str(v) for k, v in monai_info.items() if k != "src_affine"
    }
    torch.testing.assert_close(ours_info["src_affine"], monai_info["src_affine"])


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_fast_inverse_equals_monai_inverse(name, monkeypatch):
    affine, pixdim, options = GEOMETRIES[name]
    image = _meta_image((23, 19, 11), affine)
    monai_spacing = Spacingd("image", pixdim=pixdim, dtype=torch.float32, **options)
    fast_spacing = FastInverseSpacingd("image", pixdim=pixdim, dtype=torch.float32, **options)
    monai_forward = monai_spacing({"image": image.clone()})
    with monkeypatch.context() as patch:
        if name not in FALLBACKS:  # the forward pass must be the separable one too
            patch.setattr(SpatialResample, "__call__", _must_not_run)
        fast_forward = fast_spacing({"image": image.clone()})
    _assert_same_forward(fast_forward["image"], monai_forward["image"], image, pixdim, options, name in FALLBACKS)
    # a four-channel "prediction" carrying the preprocessed image's trace, as Invertd hands it over
    shape = (4, *monai_forward["image"].shape[1:])
    prediction = MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(2)))
    prediction.copy_meta_from(monai_forward["image"])
    expected = monai_spacing.inverse({"image": prediction.clone()})["image"]
    prediction = MetaTensor(prediction.as_tensor().clone())
    prediction.copy_meta_from(fast_forward["image"])
    if name not in FALLBACKS:  # the separable path must be the one taken, not MONAI's resampler
        monkeypatch.setattr(SpatialResample, "inverse", _must_not_run)
    ours = fast_spacing.inverse({"image": prediction})["image"]
    assert ours.shape == expected.shape == (4, 23, 19, 11)
    torch.testing.assert_close(ours.as_tensor(), expected.as_tensor(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.affine, expected.affine, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.affine.numpy(), affine, atol=1e-5)
    assert len(ours.applied_operations) == len(expected.applied_operations) == 0
    assert ours.dtype == expected.dtype == torch.float32


def test_fast_inverse_in_2d():
    image = MetaTensor(torch.randn(1, 40, 33), affine=torch.as_tensor(np.diag([0.7, 0.9, 1.0, 1.0])))
    monai_spacing = Spacingd("image", pixdim=(1.2, 1.4), dtype=torch.float32)
    fast_spacing = FastInverseSpacingd("image", pixdim=(1.2, 1.4), dtype=torch.float32)
    expected = monai_spacing.inverse(monai_spacing({"image": image.clone()}))["image"]
    ours = fast_spacing.inverse(fast_spacing({"image": image.clone()}))["image"]
    assert ours.shape == expected.shape == (1, 40, 33)
    torch.testing.assert_close(ours.as_tensor(), expected.as_tensor(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.affine, expected.affine)


def test_separable_forward_can_be_turned_off(monkeypatch):
    """``separable_forward=False``: MONAI's forward values exactly; the inverse stays separable."""
    image = _meta_image((23, 19, 11), np.diag([0.8, 0.7, 2.5, 1.0]))
    monai = Spacingd("image", pixdim=(1.5, 1.5, 2.0), dtype=torch.float32)({"image": image.clone()})["image"]
    fast = FastInverseSpacingd("image", pixdim=(1.5, 1.5, 2.0), dtype=torch.float32, separable_forward=False)
    ours = fast({"image": image.clone()})
    assert torch.equal(ours["image"].as_tensor(), monai.as_tensor())
    monkeypatch.setattr(SpatialResample, "inverse", _must_not_run)
    assert fast.inverse(ours)["image"].shape == (1, 23, 19, 11)
