"""``OpenAIProvider``: an ``openai.AsyncOpenAI`` client as a provider.

Works with OpenAI, Azure OpenAI and any OpenAI-compatible server (vLLM, Ollama,
LM Studio, Groq…), on openai 2.x (httpx) and 3.x (httpx2). ``openai`` is imported
when a provider is built, never by ``import llmguard``; with ``wire="lean"`` and no
client, not at all (until ``embed`` or ``.client`` needs the SDK).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ConfigurationError, LLMGuardError, ProviderConnectionError
from .._types import Request, Response, StreamEvent, Usage
from ._openai_chat import ChatStreamState, chat_arguments, chat_events, chat_response
from ._openai_errors import map_openai_error, scrub_foreign

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from .._output.types import OutputMode
    from ._wire_client import LeanChat

__all__ = ["Embeddings", "OpenAIProvider", "RetriesMultiplyWarning"]

DEFAULT_CLIENT_TIMEOUT_S = 60.0


class RetriesMultiplyWarning(UserWarning):
    """The given openai client retries by itself, so llmguard's retries multiply with it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Embeddings:
    """The vectors for a batch of texts, in order, with the usage they cost."""

    vectors: list[list[float]]
    model: str
    usage: Usage


class OpenAIProvider:
    """A provider backed by an ``openai.AsyncOpenAI`` client.

    >>> # provider = OpenAIProvider(AsyncOpenAI(max_retries=0))
    >>> # provider = OpenAIProvider(api_key="sk-...")            # llmguard builds the client
    >>> # provider = OpenAIProvider(base_url="http://localhost:11434/v1", api_key="ollama")

    Args:
        client: your own client (Azure, a compatible ``base_url``…). If it retries by
            itself (``max_retries > 0``, the SDK's default is 2), a
            ``RetriesMultiplyWarning`` is issued once: llmguard's retry layer owns
            retries; pass ``client.with_options(max_retries=0)``.
        api: ``"chat"`` (Chat Completions) or ``"responses"`` (the Responses API).
        wire: ``"sdk"`` (the default): every call goes through the openai SDK;
            ``"lean"``: chat calls go straight over the HTTP client, parsed into
            llmguard's types without the SDK's objects (same body, headers, timeout,
            errors; see docs/providers.md). With a ``client``, its settings and HTTP
            client are used; without one, openai is never imported for chat calls.
            Chat Completions only (``api="responses"`` refuses it); ``embed`` uses the SDK.
        api_key, base_url, timeout, organization, project, default_headers, http_client:
            used only when llmguard builds the client (``max_retries=0``, ``timeout``
            seconds per HTTP request; ``http_client`` an ``httpx2.AsyncClient``, or an
            ``httpx.AsyncClient`` for openai 2.x).
        include_usage: ask streams for usage (``stream_options.include_usage``);
            switch off for compatible servers that reject it (usage is then estimated).
        max_tokens_field: the name ``max_output_tokens`` is sent as:
            ``"max_completion_tokens"`` (OpenAI) or ``"max_tokens"`` (older servers).
        embedding_model: the default model for ``embed``.
        structured_output: what the server offers for ``guard.structured``:
            ``"strict"`` (JSON schema with ``strict: true``: OpenAI, vLLM…),
            ``"json"`` (JSON mode only) or ``"prompt"`` (neither).
        name: the provider's name in records.
    """

    def __init__(
        self,
        client: AsyncOpenAI | None = None,
        *,
        api: Literal["chat", "responses"] = "chat",
        wire: Literal["sdk", "lean"] = "sdk",
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_CLIENT_TIMEOUT_S,
        organization: str | None = None,
        project: str | None = None,
        default_headers: dict[str, str] | None = None,
        http_client: Any = None,
        include_usage: bool = True,
        max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens",
        embedding_model: str = "text-embedding-3-small",
        name: str = "openai",
        structured_output: OutputMode = "strict",
    ) -> None:
        if structured_output not in ("strict", "json", "prompt"):
            raise ConfigurationError(
                f'structured_output must be "strict", "json" or "prompt", not {structured_output!r}'
            )
        if api not in ("chat", "responses"):
            raise ConfigurationError(f'api must be "chat" or "responses", not {api!r}')
        if wire not in ("sdk", "lean"):
            raise ConfigurationError(f'wire must be "sdk" or "lean", not {wire!r}')
        if wire == "lean" and api != "chat":
            raise ConfigurationError(
                'wire="lean" speaks Chat Completions only; the Responses API uses the SDK '
                '(wire="sdk")'
            )
        own = (api_key, base_url, organization, project, default_headers, http_client)
        if client is not None and any(value is not None for value in own):
            raise ConfigurationError(
                "pass api_key/base_url/organization/project/default_headers/http_client "
                "or a client, not both"
            )
        self._settings: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "organization": organization,
            "project": project,
            "default_headers": default_headers,
            "timeout": timeout,
            "http_client": http_client,
        }
        self._lean: LeanChat | None = None
        self._owns_client = False  # the SDK client is llmguard's (built by _build_client)
        key: object
        if wire == "lean":
            from ._wire_setup import setup_from_args, setup_from_client

            setup = (
                setup_from_client(client)
                if client is not None
                else setup_from_args(**self._settings)
            )
            key = setup.api_key
        else:
            if client is None:
                client = self._build_client()
            elif getattr(client, "max_retries", 0) > 0:
                warnings.warn(
                    RetriesMultiplyWarning(
                        f"this openai client retries {client.max_retries} times by itself, so "
                        "every llmguard retry multiplies with it; pass "
                        "client.with_options(max_retries=0)"
                    ),
                    stacklevel=2,
                )
            key = getattr(client, "api_key", None)
        self._client = client
        self._api = api
        self._wire = wire
        self._include_usage = include_usage
        self._max_tokens_field = max_tokens_field
        self._embedding_model = embedding_model
        self._name = name
        self._structured_output: OutputMode = structured_output
        self._secrets: tuple[str, ...] = (key,) if isinstance(key, str) and key else ()
        if wire == "lean":
            from ._wire_client import LeanChat

            self._lean = LeanChat(
                setup,
                provider=name,
                secrets=self._secrets,
                include_usage=include_usage,
                max_tokens_field=max_tokens_field,
            )

    def _build_client(self) -> AsyncOpenAI:
        """The SDK client llmguard builds from its own arguments (no retries)."""
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise ImportError(
                'OpenAIProvider needs openai: pip install "llmguard[openai]"'
            ) from exc
        settings = self._settings
        self._owns_client = True
        api_key = settings["api_key"]
        if api_key is None and self._lean is not None:
            api_key = self._lean.setup.api_key
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=settings["base_url"],
            organization=settings["organization"],
            project=settings["project"],
            default_headers=settings["default_headers"],
            http_client=settings["http_client"],
            max_retries=0,
            timeout=settings["timeout"],
        )

    @property
    def name(self) -> str:
        """The provider's name in records."""
        return self._name

    def structured_output_mode(self, model: str) -> OutputMode:
        """The structured-output mode this server offers (``structured_output=``)."""
        return self._structured_output

    @property
    def client(self) -> AsyncOpenAI:
        """The underlying openai client (with ``wire="lean"`` and no client given, built
        on first use: this imports openai)."""
        if self._client is None:
            self._client = self._build_client()
        return self._client

    async def aclose(self) -> None:
        """Close the connections llmguard opened for this provider: the lean path's
        HTTP client and an SDK client llmguard built. A client you passed stays open
        (it is yours). The provider can still be used: it connects again."""
        if self._lean is not None:
            await self._lean.aclose()
        client = self._client
        # an SDK client built on your http_client would close that too: left open
        if self._owns_client and client is not None and self._settings["http_client"] is None:
            self._client = None if self._lean is not None else self._build_client()
            await client.close()

    @property
    def wire(self) -> Literal["sdk", "lean"]:
        """How chat calls travel: through the SDK (``"sdk"``) or the lean wire client."""
        return self._wire

    def _error(self, exc: BaseException, *, mid_stream: bool = False) -> LLMGuardError:
        scrub_foreign(exc, self._secrets)
        return map_openai_error(
            exc, provider=self._name, secrets=self._secrets, mid_stream=mid_stream
        )

    async def complete(self, request: Request) -> Response:
        """One request, one response."""
        if self._lean is not None:
            return await self._lean.complete(request)
        client = self.client
        try:
            if self._api == "chat":
                completion = await client.chat.completions.create(
                    **chat_arguments(
                        request,
                        stream=False,
                        include_usage=False,
                        max_tokens_field=self._max_tokens_field,
                    )
                )
                return chat_response(completion, provider=self._name)
            from ._openai_responses import responses_arguments, responses_response

            raw = await client.responses.create(**responses_arguments(request, stream=False))
            return responses_response(raw, provider=self._name)
        except LLMGuardError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    def stream(self, request: Request) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a stream; leaving the ``async with`` closes the HTTP response."""
        if self._lean is not None:
            return self._lean.stream(request)
        return self._sdk_stream(request)

    @asynccontextmanager
    async def _sdk_stream(self, request: Request) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        client = self.client
        try:
            if self._api == "chat":
                sdk_stream: Any = await client.chat.completions.create(
                    **chat_arguments(
                        request,
                        stream=True,
                        include_usage=self._include_usage,
                        max_tokens_field=self._max_tokens_field,
                    )
                )
                mapper: Callable[[Any], Iterable[StreamEvent]] = _chat_mapper()
            else:
                from ._openai_responses import responses_arguments

                sdk_stream = await client.responses.create(
                    **responses_arguments(request, stream=True)
                )
                mapper = _responses_mapper()
        except LLMGuardError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        try:
            yield _Events(sdk_stream, mapper, partial(self._error, mid_stream=True))
        finally:
            await sdk_stream.close()

    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, dimensions: int | None = None
    ) -> Embeddings:
        """Embed ``texts`` (in order) with ``model`` (default: ``embedding_model``)."""
        extra: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
        try:
            result = await self.client.embeddings.create(
                model=model or self._embedding_model, input=list(texts), **extra
            )
            vectors = [list(item.embedding) for item in sorted(result.data, key=lambda d: d.index)]
        except LLMGuardError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        usage = Usage(
            input_tokens=int(getattr(result.usage, "prompt_tokens", 0) or 0),
        )
        return Embeddings(vectors=vectors, model=result.model, usage=usage)

    def __repr__(self) -> str:
        if self._lean is not None:
            base_url = self._lean.setup.base_url
        else:
            base_url = str(getattr(self._client, "base_url", ""))
        return (
            f"OpenAIProvider(api={self._api!r}, wire={self._wire!r}, base_url={base_url!r}, "
            f"name={self._name!r})"
        )


_END = object()
"""What the mappers get when the SDK's stream ends (a ``data: null`` chunk is ``None``)."""


def _chat_mapper() -> Callable[[Any], Iterable[StreamEvent]]:
    state = ChatStreamState()

    def mapper(chunk: Any) -> Iterable[StreamEvent]:
        if chunk is _END:  # the end: was the answer whole?
            if not state.finished:
                raise ProviderConnectionError("the stream ended before the model finished")
            return ()
        return chat_events(chunk, state)

    return mapper


def _responses_mapper() -> Callable[[Any], Iterable[StreamEvent]]:
    from ._openai_responses import ResponsesStreamState, responses_events

    state = ResponsesStreamState()

    def mapper(event: Any) -> Iterable[StreamEvent]:
        if event is _END:
            if not state.finished:
                raise ProviderConnectionError("the stream ended before the response completed")
            return ()
        return responses_events(event, state)

    return mapper


class _Events:
    """Maps SDK stream items to llmguard events; errors become the error tree."""

    __slots__ = ("_done", "_error", "_iterator", "_mapper", "_pending")

    def __init__(
        self,
        sdk_stream: Any,
        mapper: Callable[[Any], Iterable[StreamEvent]],
        error: Callable[[BaseException], LLMGuardError],
    ) -> None:
        self._iterator = sdk_stream.__aiter__()
        self._mapper = mapper
        self._error = error
        self._pending: deque[StreamEvent] = deque()
        self._done = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> StreamEvent:
        pending = self._pending
        while not pending:
            if self._done:
                raise StopAsyncIteration
            try:
                try:
                    item = await self._iterator.__anext__()
                except StopAsyncIteration:
                    self._done = True
                    item = _END
                pending.extend(self._mapper(item))
            except LLMGuardError:
                self._done = True
                raise
            except Exception as exc:
                self._done = True
                raise self._error(exc) from exc
        return pending.popleft()
