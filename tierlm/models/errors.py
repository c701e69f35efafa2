"""Errors of model loading (the lowest layer that raises them, so that every layer above may catch them)."""


class ModelLoadError(RuntimeError):
    """A model directory, config or weight file that cannot be used; the message names the file or tensor."""
