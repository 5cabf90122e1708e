"""Files the project writes appear whole or not at all, even when the writer is killed."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

WRITERS = {
    "atomic_write_bytes": "from keras_lpips.weights.cache import atomic_write_bytes as write\n"
    "data = b'x' * (400 << 20)\nprint('start', flush=True)\nwrite(PATH, data)\n",
    "save_png": "import numpy as np\nfrom keras_lpips.images import save_png as write\n"
    "data = np.random.default_rng(0).integers(0, 255, (6000, 6000, 3), dtype=np.uint8)\n"
    "print('start', flush=True)\nwrite(data, PATH)\n",
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_killed_writer_leaves_no_partial_file(tmp_path, writer, delay):
    target = tmp_path / "out.bin"
    script = f"PATH = {str(target)!r}\n" + WRITERS[writer]
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout.readline().strip() == "start"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Either the writer finished (file whole) or nothing exists under the final name.
    if target.exists():
        assert process.returncode == 0 or target.stat().st_size > 0
        if writer == "atomic_write_bytes":
            assert target.stat().st_size == 400 << 20
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.endswith((".tmp", ".partial")) for name in leftovers), leftovers


def test_unwritable_output_directory_is_a_clear_error():
    """/proc exists but takes no new files, even for root (permission bits would not stop root)."""
    import numpy as np

    from keras_lpips import InputError
    from keras_lpips.images import save_png

    with pytest.raises(InputError, match="Cannot write /proc/map.png"):
        save_png(np.zeros((4, 4, 3), np.uint8), "/proc/map.png")
