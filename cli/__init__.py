"""The `keras-lpips` command line, installed as `keras_lpips.cli`."""
