"""Errors a user can act on. Each message names the file or key at fault and the fix.

They subclass ``ValueError`` so that code catching the usual exception keeps working; the
command line prints them without a traceback.
"""


class MsvmUnetError(ValueError):
    """Base class of every error that is the input's fault, not a bug."""


class ConfigError(MsvmUnetError):
    """An invalid model, training or data configuration."""


class CheckpointError(MsvmUnetError):
    """A checkpoint that cannot be read, or does not fit the model."""


class DataError(MsvmUnetError):
    """A dataset file or list that cannot be used."""


class DiskFullError(MsvmUnetError, OSError):
    """A write failed for want of disk space; the message names the folder and the space needed."""


class ExportError(MsvmUnetError):
    """A model that cannot be exported (an operator the exporter cannot write) or that exported wrongly."""
