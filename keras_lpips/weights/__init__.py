"""Weights: sources, cache, the torch-free safe reader and layout converters."""
