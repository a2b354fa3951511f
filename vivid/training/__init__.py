"""Training: prepared clips (data preparation and their reader), samples, losses, the stage 1 / stage 2 loop."""
from .clips import DataError, PreparedClip, read_index
from .config import ConfigError, TrainConfig
from .loop import ResumeError, Trainer
from .networks import InitError

__all__ = ["DataError", "PreparedClip", "read_index", "ConfigError", "TrainConfig", "ResumeError", "Trainer", "InitError"]
