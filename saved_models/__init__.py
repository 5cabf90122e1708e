"""Shipped weights, installed as `keras_lpips.saved_models` (see pyproject.toml)."""
