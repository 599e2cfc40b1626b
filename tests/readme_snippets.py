"""The README's code blocks by section, for tests that run them as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def code_blocks(section, language="python"):
    """The ``language`` code blocks of the README section titled ``section`` (up to the next ``## ``)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end if end != -1 else None], re.S)


def run_python(code, namespace=None):
    namespace = {} if namespace is None else namespace
    exec(compile(code, str(README), "exec"), namespace)
    return namespace
