"""OpenAI's error bodies, as ``FakeOpenAIEndpoint`` sends them.

``{"error": {"message", "type", "param", "code"}}`` for each status OpenAI answers
with, its 429 (``rate_limit_exceeded``, with the wait in the message), and the HTML
page a proxy in front of it sends instead of JSON. No I/O and no HTTP library here;
the shapes follow the recorded errors in ``shared/fixtures/openai``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HTML_ERROR_PAGE", "error_json", "rate_limit_json", "status_error_json"]

_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "The request is not valid.", None),
    401: (
        "invalid_request_error",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    ),
    403: ("invalid_request_error", "You are not allowed to sample from this model.", None),
    404: (
        "invalid_request_error",
        "The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
    ),
    409: ("invalid_request_error", "The request conflicts with another one.", None),
    422: ("invalid_request_error", "The request could not be processed.", None),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
    ),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def error_json(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def status_error_json(status: int, *, model: str) -> dict[str, Any]:
    """The error body OpenAI sends with ``status``."""
    if status == 429:
        return rate_limit_json(model=model, retry_after=None)
    kind, message, code = _ERRORS.get(status, _ERRORS[500 if status >= 500 else 400])
    return error_json(message.format(model=model), type=kind, code=code)


def rate_limit_json(*, model: str, retry_after: float | None) -> dict[str, Any]:
    """OpenAI's 429 body (``type: "requests"``, ``code: "rate_limit_exceeded"``)."""
    wait = "" if retry_after is None else f" Please try again in {retry_after:g}s."
    message = (
        f"Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, "
        f"Requested 1.{wait} Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    return error_json(message, type="requests", code="rate_limit_exceeded")


HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
