"""A few MBPP+ rows in EvalPlus' release format (``MbppPlus.jsonl.gz``), written for the tests.

The task ids are real MBPP ids because EvalPlus keys its input conversions and oracles on them
(Mbpp/2: tuple inputs, set comparison; Mbpp/737: a regex whose output only counts as "not
None"); the prompts and solutions are this file's own.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

ROWS: list[dict[str, Any]] = [
    {
        "task_id": "Mbpp/2",
        "prompt": '"""\nWrite a function to find the shared elements of two tuples.\n'
        "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))\n\"\"\"\n",
        "entry_point": "similar_elements",
        "canonical_solution": "\ndef similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
        "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
        "plus_input": [[[11, 12, 14, 13], [17, 15, 14, 13]], [[], [1, 2]], [[9, 8, 7], [7, 8, 9]]],
        "atol": 0,
        "assertion": "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
    },
    {
        "task_id": "Mbpp/17",
        "prompt": '"""\nWrite a function that returns the perimeter of a square given its side length.\n'
        'assert square_perimeter(10) == 40\n"""\n',
        "entry_point": "square_perimeter",
        "canonical_solution": "\ndef square_perimeter(a):\n    return 4 * a\n",
        "base_input": [[10], [5], [4]],
        "plus_input": [[10**12], [0], [2.5], [-3]],
        "atol": 0,
        "assertion": "assert square_perimeter(10) == 40",
    },
    {
        "task_id": "Mbpp/737",
        "prompt": '"""\nWrite a function to check whether the given string starts with a vowel, using regex.\n'
        'assert check_str("annie")\n"""\n',
        "entry_point": "check_str",
        "canonical_solution": "\nimport re\ndef check_str(string):\n"
        "    return re.search(r'^[aeiouAEIOU][A-Za-z0-9_]*', string)\n",
        "base_input": [["annie"], ["dawood"], ["Else"]],
        "plus_input": [["_x"], ["Ooo"], [""]],
        "atol": 0,
        "assertion": 'assert check_str("annie")',
    },
]

WRONG_ON_PLUS = {  # pass the base inputs, fail a plus one
    "Mbpp/2": "def similar_elements(a, b):\n    return tuple(x for x in a if x in b) if a != (11, 12, 14, 13) else ()\n",
    "Mbpp/17": "def square_perimeter(a):\n    return 4 * a if a < 10**6 else 0\n",
    "Mbpp/737": "def check_str(s):\n    return True if s and s[0] in 'aeiouAEIOU' else (None if s else True)\n",
}
ORDER_AND_TYPE_DIFFER = {  # right by EvalPlus' oracles, not by ==
    "Mbpp/2": "def similar_elements(a, b):\n    return sorted(set(b) & set(a), reverse=True)\n",
    "Mbpp/737": "def check_str(s):\n    return 'yes' if s[:1] in tuple('aeiouAEIOU') and s else None\n",
}


def write_release(folder: Path) -> Path:
    """``<folder>/mbpp/MbppPlus-v0.2.0.jsonl.gz`` (the catalog's mirror name)."""
    path = folder / "mbpp" / "MbppPlus-v0.2.0.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in ROWS:
            handle.write(json.dumps(row) + "\n")
    return path


def response(code: str) -> str:
    return f"Here is the function:\n```python\n{code}```\n"
