"""Errors the engine raises for bad requests and bad model inputs (all carry a user-readable message)."""


class RequestError(ValueError):
    """A request the engine refuses (bad parameters, empty prompt, ...); the engine keeps serving others."""


class PromptTooLongError(RequestError):
    """The prompt does not fit the context limit (HTTP 413)."""


class ModelLoadError(RuntimeError):
    """A model directory, config or weight file that cannot be used; the message names the file or tensor."""
