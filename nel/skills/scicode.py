"""SciCode data and the pieces of its multi-step prompt, as NeMo-Skills' SciCode generation builds them.

Problems come from the ``nvidia-scicode`` package (``scicode/data/problems_dev.jsonl``, 15,
then ``problems_all.jsonl``, 65: NeMo-Skills' ``test_aai`` split is dev + test, 80 problems,
341 sub-steps). A problem is a chain of sub-steps; each sub-step's request carries the earlier
steps' descriptions and the code the model wrote for them (NeMo-Skills'
``inference/eval/scicode.py``):

* ``problem_steps_str``: for every earlier step, its description (plus its background when
  ``with_background``), the code for it, and a ``------`` separator between steps;
* ``next_step_str``: this step's description (and background), then its function header and
  return line;
* ``dependencies``: the problem's ``required_dependencies`` (the imports the code may use).

Three sub-steps are not asked (SciCode ships their code: ``13.6``, ``62.1``, ``76.3``); the
prepared row carries that code in ``prefilled_steps`` (step index -> code), read from the same
package, and the later steps see it as if the model had written it.

The code of one step is its response's first ```python block (else the first ``` block, else
the whole text) with import lines removed, since the dependencies are prepended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nel.errors import DataError

__all__ = [
    "OUT_OF_CONTEXT",
    "PREFILLED_FILES",
    "extract_step_code",
    "scicode_rows",
    "step_fields",
    "step_key",
]

# The sub-steps whose code SciCode ships (file name in scicode/data -> step number).
PREFILLED_FILES = {"13.6.txt": "13.6", "62.1.txt": "62.1", "76.3.txt": "76.3"}
OUT_OF_CONTEXT = "_ran_out_of_context_"  # NeMo-Skills' marker for steps never asked
_IMPORT_LINE = re.compile(r"^\s*(import .*|from .*\s+import\s+.*)", re.MULTILINE)


def scicode_rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """``test_aai`` rows: the problem files (dev, test) then the prefilled steps' code files."""
    problems = [p for p in paths if p.suffix == ".jsonl" or p.name.endswith(".jsonl")]
    prefilled: dict[str, str] = {}
    for path in paths:
        step = next((s for name, s in PREFILLED_FILES.items() if path.name.endswith(name)), None)
        if step is not None:
            prefilled[step] = path.read_text(encoding="utf-8").strip()
    for path in problems:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield _row(json.loads(line), prefilled, f"{path.name} line {number}")


_STEP_FIELDS = ("step_number", "step_description_prompt", "function_header", "test_cases")


def _row(raw: dict[str, Any], prefilled: dict[str, str], where: str) -> dict[str, Any]:
    steps = raw.get("sub_steps")
    if not isinstance(steps, list) or "problem_id" not in raw or "required_dependencies" not in raw:
        raise DataError(f"{where}: not a SciCode problem (needs problem_id, required_dependencies, sub_steps)")
    for step in steps:
        missing = [name for name in _STEP_FIELDS if name not in step]
        if missing:
            raise DataError(f"{where}: a sub-step lacks {', '.join(missing)}")
    numbers = [str(step["step_number"]) for step in steps]
    raw["prefilled_steps"] = {str(i): prefilled[n] for i, n in enumerate(numbers) if n in prefilled}
    raw["num_subtasks"] = len(steps) - len(raw["prefilled_steps"])
    return raw


def step_key(row: dict[str, Any], index: int) -> str:
    """NeMo-Skills' key of a step's generation: ``<problem_id>.<1-based step>``."""
    return f"{row['problem_id']}.{index + 1}"


def _describe(step: dict[str, Any], with_background: bool) -> str:
    text = step["step_description_prompt"]
    return f"{text}\n{step.get('step_background') or ''}" if with_background else text


def step_fields(
    row: dict[str, Any], index: int, previous_code: list[str], with_background: bool
) -> dict[str, str]:
    """The template fields of step ``index``'s request; ``previous_code`` holds steps ``0..index-1``."""
    steps = row["sub_steps"]
    parts: list[str] = []
    for i in range(index):
        parts += [_describe(steps[i], with_background), previous_code[i], "------"]
    step = steps[index]
    header = f"{step['function_header']}\n\n{step.get('return_line') or ''}"
    return {
        "problem_steps_str": "\n\n".join(parts[:-1]),
        "next_step_str": f"{_describe(step, with_background)}\n\n{header}",
        "dependencies": row["required_dependencies"],
    }


def extract_step_code(response: str) -> str:
    """The code of one step's response (see the module doc)."""
    if "```" in response:
        if "```python" in response:
            code = response.split("```python", 1)[1].split("```", 1)[0]
        else:
            code = response.split("```", 2)[1]
    else:
        code = response
    return _IMPORT_LINE.sub("", code)
