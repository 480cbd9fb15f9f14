"""Training, evaluation and prediction: the library behind ``msvmunet train / evaluate / predict / demo``."""

from .config import PRESETS, TrainConfig, resolve_config
from .evaluate import evaluate
from .inference import predict_volume
from .losses import DiceCELoss
from .predict import PredictionFailures, predict
from .segmenter import Segmenter, keep_largest_component
from .trainer import TrainingError, train

__all__ = [
    "DiceCELoss",
    "PRESETS",
    "PredictionFailures",
    "Segmenter",
    "TrainConfig",
    "TrainingError",
    "evaluate",
    "keep_largest_component",
    "predict",
    "predict_volume",
    "resolve_config",
    "train",
]
