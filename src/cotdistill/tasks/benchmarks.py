"""Adapters for the seven benchmarks of the paper. (Filled in by the foundation issue.)"""
