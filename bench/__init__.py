"""Benchmarks of spec section 8: Faust admission path against a raw aiokafka loop."""
