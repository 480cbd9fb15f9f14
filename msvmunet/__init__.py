"""msvmunet: MSVM-UNet (Multi-Scale Vision Mamba UNet) for medical image segmentation."""

__version__ = "0.1.0"
