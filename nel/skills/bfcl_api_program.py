"""The program nel runs in the sandbox to execute model-written BFCL calls (standard library
only, no nel imports: :mod:`nel.skills.bfcl_multi_turn` copies this source in, next to
``apis.zip`` (BFCL's simulated APIs and mpmath, from the installed packages) and ``setup.json``).

The calls are Python expressions (``cd(folder='documents')``) that BFCL's own executor
evaluates, so they can do anything Python can: that is why this runs in the sandbox. Protocol,
JSON lines: ``{"calls": [...]}`` in, ``{"results": [...], "state": {class: {attribute: text}}}``
out, the state being every public attribute of every API instance as canonical JSON (``repr``
for what JSON cannot hold), the way BFCL's state checker compares them. This side only reports;
nel compares the reports of two separate runs (the model's calls, the ground truth's), so a call
that rewrites this program can forge only its own report, never the reference.
"""

import importlib
import json
import os
import sys

_channel_in = os.fdopen(os.dup(0), "r")
_channel_out = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
os.dup2(2, 1)
sys.path.insert(0, os.path.abspath("apis.zip"))

def _canonical(value):
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def main():
    setup = json.load(open("setup.json"))
    utils = importlib.import_module(setup["package"] + ".eval_checker.multi_turn_eval.multi_turn_utils")
    execute_multi_turn_func_call = utils.execute_multi_turn_func_call
    for line in _channel_in:
        calls = json.loads(line)["calls"]
        results, instances = execute_multi_turn_func_call(
            calls, setup["initial_config"], setup["involved_classes"], setup["instance"], setup["id"],
            long_context=setup["long_context"], is_evaL_run=True,
        )
        state = {name: {k: _canonical(v) for k, v in vars(obj).items() if not k.startswith("_")}
                 for name, obj in instances.items()}
        _channel_out.write(json.dumps({"results": [str(r) for r in results], "state": state}) + "\n")
        _channel_out.flush()


main()
