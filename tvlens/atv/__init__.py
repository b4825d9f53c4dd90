"""Adaptive Task Vectors (Kang et al. 2025): a generator reads the query alone and writes one
vector per layer into a frozen target."""
