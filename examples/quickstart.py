"""llmguard in one screen, offline on the fake provider: no API key needed.

Run it with `make demo` or `.venv/bin/python examples/quickstart.py`. With
OPENAI_API_KEY set it asks the real API instead (model from OPENAI_MODEL, default
gpt-4o-mini; OPENAI_BASE_URL points it at a compatible server).
"""

import os

import anyio

import llmguard
from llmguard import Guard, Observe, OpenAIProvider, Provider, TextDelta
from llmguard.testing import FakeProvider, capture_records

# Scripted answers, streamed in 6-character chunks, with some simulated latency.
provider: Provider = FakeProvider(
    [
        "A guard wraps each LLM call; here it adds a deadline and one record per call.",
        "Paris.",
    ],
    chunk_size=6,
    latency=0.03,
    first_token_delay=0.05,
    chunk_delay=0.01,
)
model = "fake-model"
if os.environ.get("OPENAI_API_KEY"):
    provider = OpenAIProvider()  # the key (and OPENAI_BASE_URL) from the environment
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
guard = Guard(provider, [Observe()], model=model, timeout=30)


async def main() -> None:
    print(f"provider: {provider.name}, model: {model}")
    with capture_records() as records, llmguard.context(user="alice", endpoint="/chat"):
        print("streamed: ", end="", flush=True)
        async with guard.stream(system="Be brief.", user="What is a guard?") as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
        print()

        response = await guard.complete(user="What is the capital of France?")
        print(f"completion: {response.text}")

    for r in records:
        ttft = "-" if r.time_to_first_token_s is None else f"{r.time_to_first_token_s * 1000:.0f}ms"
        tokens = f"{r.usage.total_tokens} (in {r.usage.input_tokens}, out {r.usage.output_tokens})"
        print(
            f"record: user={r.user} endpoint={r.endpoint} stream={r.stream} tokens={tokens} "
            f"latency={r.latency_s * 1000:.0f}ms ttft={ttft}"
        )


if __name__ == "__main__":
    try:
        anyio.run(main)
    except llmguard.ProviderError as error:  # a typed error, with no key in its message
        raise SystemExit(f"the provider failed: {error}") from None
