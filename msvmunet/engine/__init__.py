"""Training, evaluation and prediction: the library behind ``msvmunet train / evaluate / predict / demo``."""

from .config import PRESETS, TrainConfig, resolve_config
from .evaluate import evaluate
from .inference import predict_volume
from .losses import DiceCELoss
from .predict import predict
from .trainer import TrainingError, train

__all__ = [
    "DiceCELoss",
    "PRESETS",
    "TrainConfig",
    "TrainingError",
    "evaluate",
    "predict",
    "predict_volume",
    "resolve_config",
    "train",
]
