"""Variant families: competitors that self-compete tournaments run on the same input."""
