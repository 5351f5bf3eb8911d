"""The process that runs RULER's generator scripts (``python -m nel.skills.ruler_worker JOBS``).

The scripts shipped in ``nvidia-long-context-eval`` are command-line programs: they parse
``sys.argv`` and build their state when the module runs. Running each through ``runpy`` in this
one process, instead of one interpreter per task, pays the imports (transformers, nltk,
numpy) once; setting ``sys.argv`` and ``sys.path`` is why this is its own process and not
part of nel's. ``JOBS`` is a JSON file: a list of ``{"script": path, "argv": [...]}``.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    jobs = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for job in jobs:
        script = Path(job["script"])
        # What running `python script.py` would put first on sys.path, plus the data folder
        # (template.py, tokenizer.py) the scripts add themselves.
        for folder in (script.parent.parent, script.parent):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        sys.argv = [str(script), *job["argv"]]
        runpy.run_path(str(script), run_name="__main__")
        print(f"nel-ruler-done {job['name']}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
