"""Execution infrastructure the scorers share, kept apart from any one scorer.

``pool``: a process pool for CPU-bound scoring with per-item timeouts and hung-worker
replacement. ``sandbox``: runs untrusted, model-written code in a locked-down subprocess.
"""
