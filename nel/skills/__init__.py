"""NeMo-Skills benchmarks natively: catalog, prompt configs, data preparation."""
