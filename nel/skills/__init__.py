"""NeMo-Skills benchmarks, natively or through the nemo_skills package.

``catalog`` (what each benchmark is), ``converters`` and ``prepare`` (upstream files to
NeMo-Skills' prepared layout), ``data`` (reading it), ``prompts`` (NeMo-Skills' prompt
configs), ``scorers`` and ``judge`` (scoring by METRICS_TYPE), ``backends`` and
``nemo_backend`` (native or nemo_skills behind one interface), ``listing`` (``nel list``).
"""
