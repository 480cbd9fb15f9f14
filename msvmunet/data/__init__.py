"""Data: dataset readers (Synapse, ACDC, nnU-Net NIfTI, SSL4MIS ACDC, 2-D image folders), preparation, a
phantom, augmentation.

See ``docs/data.md`` for the layouts, the shapes and the decisions behind them.
"""

from .augment import OPS, AugmentConfig, Augmenter, gaussian_blur, normalize
from .base import SliceDataset, Volume
from .batches import AugmentedBatches, BatchKeys
from .check import CheckReport, check_dataset, check_training_data
from .datasets import DataSource, detect_format, open_dataset, split_cases
from .acdc import ACDCData
from .image_folders import ImageFolderData
from .nifti import NiftiData
from .phantom import make_phantom, phantom_case
from .prepare import BTCV_TO_SYNAPSE, SYNAPSE_TEST_CASES, PrepareSummary, prepare_acdc, prepare_synapse
from .preprocessing import (ACDC_CLASSES, SYNAPSE_CLASSES, Preprocessing, acdc_preprocessing,
                            synapse_preprocessing)
from .resize import resize_images, resize_labels
from .ssl4mis import SSL4MISData
from .synapse import SynapseData

__all__ = [
    "ACDC_CLASSES", "ACDCData", "AugmentConfig", "AugmentedBatches", "Augmenter", "BatchKeys", "BTCV_TO_SYNAPSE", "CheckReport", "DataSource",
    "ImageFolderData", "NiftiData", "OPS", "PrepareSummary", "Preprocessing", "SSL4MISData", "SYNAPSE_CLASSES",
    "SYNAPSE_TEST_CASES", "SliceDataset", "SynapseData", "Volume", "acdc_preprocessing", "check_dataset",
    "check_training_data", "detect_format",
    "gaussian_blur", "make_phantom", "normalize", "open_dataset", "phantom_case", "prepare_acdc",
    "prepare_synapse", "resize_images", "resize_labels", "split_cases", "synapse_preprocessing",
]
