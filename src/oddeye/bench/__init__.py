"""Benchmarks that print figures (no pass/fail): ``oddeye bench speed``."""
