"""msvmunet: MSVM-UNet (Multi-Scale Vision Mamba UNet) for medical image segmentation.

>>> import msvmunet
>>> model = msvmunet.create_model("tiny_0230s", num_classes=9)
>>> logits = model(images)          # (B, 1 or 3, H, W) -> (B, 9, H, W)
>>> seg = msvmunet.Segmenter("final.pt", tta=True)
>>> labels = seg(volume)             # (Z, H, W) raw intensities -> (Z, H, W) labels
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, ExportError, MsvmUnetError
from .models import (
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    MSVMUNet,
    count_parameters,
    create_model,
    list_models,
    model_config,
)
from .models.checkpoints import (
    from_official_checkpoint,
    load_model,
    load_vmamba_encoder_weights,
    official_to_ours,
    ours_to_official,
    save_model,
    to_official_state_dict,
)
from .models.export import export_onnx

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecoderConfig",
    "EncoderConfig",
    "ExportError",
    "MSVMUNet",
    "ModelConfig",
    "MsvmUnetError",
    "Segmenter",
    "__version__",
    "count_parameters",
    "create_model",
    "export_onnx",
    "from_official_checkpoint",
    "list_models",
    "load_model",
    "load_vmamba_encoder_weights",
    "model_config",
    "official_to_ours",
    "ours_to_official",
    "save_model",
    "to_official_state_dict",
]


def __getattr__(name: str):
    # The Segmenter lives in the engine, imported on first use so that ``import msvmunet`` stays light.
    if name == "Segmenter":
        from .engine.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'msvmunet' has no attribute {name!r}")
