"""The one error type users see as a one-line message (exit code 2)."""


class UsageError(Exception):
    """Bad input from the user: a flag, a path, a dataset or a checkpoint. The message says what to do next."""


class TrainingStopped(Exception):
    """Training cannot usefully go on (NaN/inf losses, or D has won outright); the message names the last good checkpoint."""
