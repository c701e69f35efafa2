"""Errors the engine raises for bad requests and bad model inputs (all carry a user-readable message).

The request errors are defined in `tierlm.errors` (shared with the HTTP server, each with its HTTP status);
`ModelLoadError` in `tierlm.models.errors`.
"""
from tierlm.errors import PromptTooLongError, RequestError
from tierlm.models.errors import ModelLoadError

__all__ = ["ModelLoadError", "PromptTooLongError", "RequestError"]
