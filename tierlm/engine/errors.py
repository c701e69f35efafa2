"""Errors the engine raises for bad requests and bad model inputs (all carry a user-readable message)."""

from tierlm.models.errors import ModelLoadError

__all__ = ["ModelLoadError", "PromptTooLongError", "RequestError"]


class RequestError(ValueError):
    """A request the engine refuses (bad parameters, empty prompt, ...); the engine keeps serving others."""


class PromptTooLongError(RequestError):
    """The prompt does not fit the context limit (HTTP 413)."""
