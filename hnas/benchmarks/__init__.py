"""Benchmark tables: look up the trained accuracy and training time of an architecture instead of training it."""
