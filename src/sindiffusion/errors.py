"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class SinDiffusionError(Exception):
    """A problem with the user's input (file, size, mask, checkpoint); the message says what to do."""


class CheckpointError(SinDiffusionError):
    """A run folder or checkpoint file that is missing, foreign or corrupt."""


class TrainingDiverged(SinDiffusionError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class SinDiffusionWarning(UserWarning):
    """Something a user would want to know, that does not stop the work: a setting dropped on
    this machine, a resume on another kind of device. The CLI prints it as one line."""
