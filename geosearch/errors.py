"""Errors a user can act on. The CLI prints each as one line and exits non-zero; anything else is a bug."""

from pathlib import Path


class GeosearchError(Exception):
    """A problem with the user's input or environment, stated so that they know what to do."""


class SceneError(GeosearchError):
    """A scene that cannot be tiled: the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
