"""Grade programs with LiveCodeBench's own grader (``nvidia-livecodebench``), for parity tests.

Run as a script in its own process (the grader disables ``os.kill`` and friends in the
process that runs the code): reads ``[[input_output_json, code, timeout], ...]`` as JSON on
stdin, writes ``[{"passed": bool, "error_code": int | None}, ...]`` to the file named by
its argument (stdout is the programs').
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from livecodebench.evaluation.compute_code_generation_metrics import check_correctness

    verdicts = []
    for input_output, code, timeout in json.load(sys.stdin):
        sample = {"input_output": input_output}
        results, metadata = check_correctness(sample, code, timeout=timeout, debug=False)
        total = len(json.loads(input_output)["inputs"])
        passed = len(results) == total and all(bool(r) is True and r is not None and r > 0 for r in results)
        verdicts.append({"passed": passed, "error_code": None if passed else metadata.get("error_code", -1)})
    with open(sys.argv[1], "w") as handle:
        json.dump(verdicts, handle)


if __name__ == "__main__":
    main()
