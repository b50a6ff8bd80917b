"""llmguard in one screen, offline on the fake provider: no API key needed.

Run it with `make demo` or `.venv/bin/python examples/quickstart.py`.
"""

import os

import anyio

import llmguard
from llmguard import Guard, Observe, TextDelta
from llmguard.testing import FakeProvider, capture_records

# Scripted answers, streamed in 6-character chunks, with some simulated latency.
provider = FakeProvider(
    [
        "A guard wraps each LLM call; here it adds a deadline and one record per call.",
        "Paris.",
    ],
    chunk_size=6,
    latency=0.03,
    first_token_delay=0.05,
    chunk_delay=0.01,
)
guard = Guard(provider, [Observe()], model="fake-model", timeout=10)


async def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        print("OPENAI_API_KEY is set, but the OpenAI provider is not built yet: using the fake.")

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
    anyio.run(main)
