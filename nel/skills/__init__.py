"""NeMo-Skills benchmarks, natively or through the nemo_skills package.

``catalog`` (what each benchmark is), ``converters`` and ``prepare`` (upstream files to
NeMo-Skills' prepared layout), ``data`` (reading it), ``prompts`` (NeMo-Skills' prompt
configs), ``scoring_types`` (one object per METRICS_TYPE: scorer, score names,
verdicts, extra metrics, needs) and ``judge``, ``backends`` and
``nemo_backend`` (native or nemo_skills behind one interface), ``listing`` (``nel list``).
"""
