"""One base class for every error caused by what a user gave birdkeras.

A config value, a path, a metadata CSV, an audio file, a model folder, a submission:
when one of these is wrong, birdkeras raises a `UserError` subclass whose message names
the input and what was expected. The command line prints that message and exits with
status 2. Anything else is a bug in birdkeras (or in a library below it) and keeps its
traceback.

Each stage defines its own subclass next to the code that raises it (`ConfigError`
here, `AudioError` in `audio`, `ShardError` in `shards`, ...), so a caller can catch
exactly the failures of one stage.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad user input; the message names the input and what was expected."""


class ConfigError(UserError):
    """A configuration file or override is invalid; the message names the key."""


class MissingPathError(UserError):
    """A file or folder a user named does not exist (checked where it is used)."""


def require_file(path, what: str):
    """`path` as given if it is an existing file, else `MissingPathError` naming `what`."""
    if path is None or not Path(path).is_file():
        raise MissingPathError(f"{what}={path} is not a file")
    return path


def require_dir(path, what: str):
    """`path` as given if it is an existing folder, else `MissingPathError` naming `what`."""
    if path is None or not Path(path).is_dir():
        raise MissingPathError(f"{what}={path} is not a folder")
    return path


class PredictError(UserError):
    """Bad inference input (model, runtime, audio path, class order); shared by the
    inference modules (windows, runtimes, submission, infer)."""
