"""Sphinx configuration: the Markdown pages in docs/ (MyST) plus an API reference (autodoc).

Build with ``make docs`` (warnings are errors). docs/about-these-docs.md says why
Sphinx + MyST-Parser and what the build checks.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docstrings import prepare_docstring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

project = "llmguard"
author = "llmguard developers"
copyright = "llmguard developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

root_doc = "index"
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]

# MyST: [text](page.md#a-heading) links resolve to heading slugs down to level 4.
myst_heading_anchors = 4

# A fence's first word is its language: ```python test and ```python no-run reason="..."
# highlight as Python (the rest is tests/test_docs.py's run mode, which MyST ignores).
# Indented blocks without a language are plain text (the diagrams in concepts.md).
highlight_language = "text"
pygments_style = "friendly"

# autodoc: Google-style docstrings (napoleon); type hints go into the description, so
# long signatures stay readable; members in source order (related names together).
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "llmguard"

# The public modules whose ``__all__`` the API reference (docs/api/) must cover.
PUBLIC_MODULES = (
    "llmguard",
    "llmguard.testing",
    "llmguard.integrations",
    "llmguard.integrations.starlette",
    "llmguard.integrations.fastapi",
    "llmguard.integrations.django",
    "llmguard.integrations.flask",
    "llmguard.integrations.celery",
)

logger = logging.getLogger(__name__)


def _drop_object_base(
    app: Sphinx, name: str, obj: object, options: object, bases: list[type]
) -> None:
    """No "Bases: object" line under every plain class (see ``_drop_empty_bases``)."""
    if bases == [object]:
        bases.clear()


def _drop_empty_bases(app: Sphinx, doctree: nodes.document) -> None:
    """Remove the "Bases:" line autodoc still writes when no base is left to show."""
    for paragraph in list(doctree.findall(nodes.paragraph)):
        if paragraph.astext().strip() == "Bases:":
            paragraph.parent.remove(paragraph)


def _attribute_doc(obj: object) -> list[str]:
    """The ``#:`` comment or docstring of the llmguard module-level name bound to ``obj``.

    A type alias or constant re-exported by ``llmguard`` is documented where it is
    defined (``Role`` in ``llmguard._types``...); autodoc only looks in ``llmguard``.
    """
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("llmguard") or module is None:
            continue
        for attribute, value in vars(module).items():
            if value is obj:
                docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
                if ("", attribute) in docs:
                    return list(docs["", attribute])
    return []


def _data_doc_from_definition(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Constants and aliases: their own documentation, never their type's docstring."""
    if what not in ("data", "attribute"):
        return
    text = [line for line in lines if line.strip()]
    borrowed = (type(obj).__doc__, getattr(getattr(obj, "__origin__", None), "__doc__", None))
    if text and all(text != _text_lines(doc) for doc in borrowed):
        return  # the name has its own documentation
    lines[:] = _attribute_doc(obj)


def _text_lines(docstring: str | None) -> list[str]:
    return [line for line in prepare_docstring(docstring or "") if line.strip()]


def _check_public_names_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Every name in a public module's ``__all__`` has an entry in the API reference."""
    documented = {entry[0] for entry in env.get_domain("py").get_objects()}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj: Any = getattr(module, name)
            home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            if f"{module_name}.{name}" not in documented and home not in documented:
                logger.warning(
                    "%s.%s is public but not in the API reference: add it to a page in docs/api/",
                    module_name,
                    name,
                    type="llmguard",
                    subtype="undocumented",
                )


def _load_public_names() -> None:
    """Load every lazy name of ``llmguard`` first, so each reads as ``llmguard.X``.

    ``llmguard`` sets ``__module__`` of a lazily loaded name on first access; loading
    them all before autodoc renders anything keeps signatures and reprs consistent.
    """
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            getattr(module, name)


def setup(app: Sphinx) -> dict[str, Any]:
    _load_public_names()
    app.connect("autodoc-process-bases", _drop_object_base)
    app.connect("doctree-read", _drop_empty_bases)
    app.connect("autodoc-process-docstring", _data_doc_from_definition)
    app.connect("env-check-consistency", _check_public_names_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
