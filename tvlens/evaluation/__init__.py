"""Evaluation stage: scoring steered models (whole answer, first token, KL to ICL) and the
statistics of method comparisons (hierarchical bootstrap, TOST, MDD, verdicts)."""
