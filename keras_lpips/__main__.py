"""`python -m keras_lpips ...`: the `keras-lpips` command."""

from keras_lpips.cli.app import run

run()
