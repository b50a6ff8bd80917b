"""Framework helpers: one module each, importing its framework only when imported.

- ``llmguard.integrations.starlette`` (and its alias ``.fastapi``): Starlette and FastAPI
- ``llmguard.integrations.django``: Django (async and sync views, ASGI and WSGI)
- ``llmguard.integrations.flask``: Flask
- ``llmguard.integrations.celery``: carrying the llmguard context into Celery tasks

The HTTP status each llmguard error maps to is the same in every framework
(``error_payload``; the table is in docs/frameworks.md).
"""

from ._common import SSE_HEADERS, error_payload

__all__ = ["SSE_HEADERS", "error_payload"]
