"""Structured output: strict schemas, tolerant extraction, re-ask, partial objects.

Only ``types`` is light; the modules that need pydantic import it when first used,
so ``import llmguard`` does not load pydantic.
"""
