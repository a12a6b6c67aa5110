"""Errors a user can act on. The CLI prints each as one line and exits non-zero; anything else is a bug."""

from pathlib import Path

_SEE_PREVIOUS = "See previous exception for details."


class GeosearchError(Exception):
    """A problem with the user's input or environment, stated so that they know what to do."""


class ModelMismatch(GeosearchError):
    """A collection holds the vectors of another model than the one this run uses."""

    def __init__(self, message: str, stored_model_id: str):
        super().__init__(message)
        self.stored_model_id = stored_model_id


class StoreServed(GeosearchError):
    """The embedded store is held by a running `geosearch serve`, which answers at `url`: the commands that its
    API covers go through it."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


def with_cause(error: Exception) -> str:
    """An error's message with what it refers to: rasterio's failed reads and writes say only "Read failed. See
    previous exception for details.", and the details, GDAL's own message, are its cause."""
    text = str(error)
    if _SEE_PREVIOUS in text and error.__cause__ is not None:
        return text.replace(_SEE_PREVIOUS, str(error.__cause__))
    return text


class SceneError(GeosearchError):
    """A scene that cannot be tiled: the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self):  # so that it crosses from a reader process intact
        return (SceneError, (self.path, self.problem))
