"""medattn3d: MONAI-native attention networks for 2D and 3D CT/MRI segmentation."""

__version__ = "0.1.0"
