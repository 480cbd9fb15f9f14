from .config import DecoderConfig, EncoderConfig, ModelConfig, PRESETS
from .msvm_unet import MSVMUNet, count_parameters, create_model, list_models, model_config

__all__ = [
    "DecoderConfig",
    "EncoderConfig",
    "MSVMUNet",
    "ModelConfig",
    "PRESETS",
    "count_parameters",
    "create_model",
    "list_models",
    "model_config",
]
