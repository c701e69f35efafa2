"""Errors the engine raises for bad requests and bad model inputs (all carry a user-readable message).

The request errors are defined in `tierlm.errors` (shared with the HTTP server, each with its HTTP status).
"""
from tierlm.errors import PromptTooLongError, RequestError

__all__ = ["ModelLoadError", "PromptTooLongError", "RequestError"]


class ModelLoadError(RuntimeError):
    """A model directory, config or weight file that cannot be used; the message names the file or tensor."""
