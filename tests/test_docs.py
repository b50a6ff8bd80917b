"""Every fenced Python example in README.md and docs/*.md runs, and so does the quickstart.

Rules for a fenced block whose info string starts with ``python``:

- ```` ```python ````: executed. The blocks of one file run in order in one shared
  namespace, so a later block may use names an earlier one defined. Top-level
  ``await`` is not allowed: examples call ``anyio.run(main)``.
- ```` ```python test ````: a whole pytest module; it is run by pytest in a
  subprocess (once under pytest-asyncio strict mode, once under auto mode) and
  every test in it must pass.
- ```` ```python no-run reason="..." ````: skipped, and the reason is required.

Blocks in any other language (``text``, ``console``, ``toml``...) are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
QUICKSTART = ROOT / "examples" / "quickstart.py"

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first line of code
    mode: str  # "run", "test" or "no-run"
    reason: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _parse_info(info: str, where: str) -> tuple[str, str | None] | None:
    """``(mode, reason)`` for a Python block, ``None`` for any other language."""
    words = shlex.split(info)
    if not words or words[0] != "python":
        return None
    rest = words[1:]
    if not rest:
        return ("run", None)
    if rest == ["test"]:
        return ("test", None)
    if rest[0] == "no-run":
        reason = None
        for word in rest[1:]:
            key, _, value = word.partition("=")
            if key == "reason":
                reason = value.strip() or None
        return ("no-run", reason)
    raise AssertionError(f"{where}: unknown python block option(s) {rest!r}")


def extract_blocks(path: Path) -> list[Block]:
    """The fenced Python blocks of a Markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence = match["fence"]
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: unclosed code fence"
        parsed = _parse_info(match["info"].strip(), f"{path.name}:{index + 1}")
        if parsed is not None:
            mode, reason = parsed
            code = "\n".join(lines[start:end]) + "\n"
            blocks.append(Block(path, start + 1, mode, reason, code))
        index = end + 1
    return blocks


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_python_blocks_run(path: Path) -> None:
    """The file's blocks run top to bottom in one namespace, as a reader would."""
    blocks = extract_blocks(path)
    for block in blocks:
        if block.mode == "no-run":
            assert block.reason, f'{block.where}: a no-run block needs reason="..."'
    module = types.ModuleType(f"_docs_{path.stem}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses and pickle look modules up here
    try:
        for block in blocks:
            if block.mode != "run":
                continue
            # Pad with blank lines so tracebacks point at the Markdown line.
            source = "\n" * (block.line - 1) + block.code
            try:
                code = compile(source, str(path), "exec")
            except SyntaxError as exc:
                pytest.fail(f"{block.where}: does not compile: {exc}")
            exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]


def _test_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in extract_blocks(path) if b.mode == "test"]


@pytest.mark.parametrize("mode", ["strict", "auto"])
@pytest.mark.parametrize("block", _test_blocks(), ids=lambda b: b.where)
def test_pytest_blocks_pass(block: Block, mode: str, tmp_path: Path) -> None:
    """A ``python test`` block is a pytest module that passes under either asyncio mode."""
    test_file = tmp_path / f"test_block_{block.line}.py"
    test_file.write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-o",
            f"asyncio_mode={mode}",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "--rootdir",
            str(tmp_path),
            str(test_file),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{block.where} ({mode}):\n{result.stdout}\n{result.stderr}"
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout


def test_every_doc_file_is_checked() -> None:
    assert ROOT / "README.md" in DOC_FILES
    assert len(DOC_FILES) >= 9
    assert any(extract_blocks(path) for path in DOC_FILES)


def test_a_no_run_block_without_reason_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text('```python no-run\nx = 1\n```\n\n```python no-run reason="why"\n```\n')
    first, second = extract_blocks(doc)
    assert (first.mode, first.reason) == ("no-run", None)
    assert (second.mode, second.reason) == ("no-run", "why")
    doc.write_text("```python maybe\n```\n")
    with pytest.raises(AssertionError, match="unknown python block option"):
        extract_blocks(doc)


def _run_quickstart(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, str(QUICKSTART)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_quickstart_runs_offline() -> None:
    result = _run_quickstart()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert result.stderr == ""
    assert "provider: fake, model: fake-model" in out
    streamed = re.search(r"^streamed: (.+)$", out, re.MULTILINE)
    completion = re.search(r"^completion: (.+)$", out, re.MULTILINE)
    assert streamed, out
    assert streamed.group(1).strip(), out
    assert completion, out
    assert completion.group(1).strip(), out
    records = re.findall(r"^record: (.+)$", out, re.MULTILINE)
    assert len(records) == 2, out
    assert "stream=True" in records[0]
    assert "stream=False" in records[1]
    for record in records:
        assert "user=alice" in record
        assert "endpoint=/chat" in record
        assert re.search(r"tokens=[1-9]\d*", record), record


def test_quickstart_uses_openai_with_a_key() -> None:
    # A closed loopback port stands in for the API: nothing leaves the machine.
    result = _run_quickstart(
        OPENAI_API_KEY="sk-test-PLANTED-quickstart", OPENAI_BASE_URL="http://127.0.0.1:9/v1"
    )
    assert "provider: openai, model: gpt-4o-mini" in result.stdout
    assert result.returncode == 1
    assert "the provider failed: could not reach the provider" in result.stderr
    assert "PLANTED" not in result.stdout + result.stderr
