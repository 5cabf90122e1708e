"""The environment (issue 12, part 6): KERAS_HOME naming a file or a read-only place, a checksum
sidecar that is a directory, and KERAS_LPIPS_OFFLINE's values. One clear line each; where Keras
itself falls back (`keras.utils.get_file` caches in /tmp/.keras when the Keras home cannot be
written), keras-lpips does the same and says so once on stderr.
"""

import pathlib

import pytest

from keras_lpips.errors import InputError, KerasLPIPSNote, OutputError, WeightsUnavailableError
from keras_lpips.weights import cache_folder, pretrained, sources
from tests.helpers import closed_port, one_error_line, run_cli, run_installed

READ_ONLY = "/proc/keras-lpips-home"  # /proc takes no new folders, even for root


@pytest.fixture
def fallback(tmp_path, monkeypatch):
    """Keras' fallback home, moved into the test's folder (the real one is /tmp/.keras)."""
    home = tmp_path / "tmp-keras"
    monkeypatch.setattr(cache_folder, "FALLBACK_HOME", home)
    monkeypatch.setattr(cache_folder, "_FALLBACKS_SAID", set())
    return home


# --- KERAS_HOME -----------------------------------------------------------------------------------


def test_keras_home_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"^KERAS_HOME=.*home is not a folder; the weight cache goes in a folder"):
        cache_folder.cache_dir()
    with pytest.raises(InputError, match="is not a folder"):
        pretrained.imagenet_state_dict("alex")


def test_keras_lpips_folder_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras_lpips").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"keras_lpips is not a folder"):
        cache_folder.cache_dir()


def test_read_only_keras_home_falls_back_as_keras_does(fallback, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", READ_ONLY)
    with pytest.warns(KerasLPIPSNote) as notes:
        assert cache_folder.cache_dir() == fallback / "keras_lpips" and (fallback / "keras_lpips").is_dir()
        assert cache_folder.cache_dir() == fallback / "keras_lpips"
    assert [str(n.message) for n in notes] == [
        f"{READ_ONLY}/keras_lpips is not writable; keras-lpips caches weights in {fallback / 'keras_lpips'} instead (as Keras does)"
    ]  # said once
    assert capsys.readouterr().err == ""  # the library prints nothing itself


def test_no_writable_place_at_all_is_one_line(monkeypatch):
    monkeypatch.setenv("KERAS_HOME", READ_ONLY)
    monkeypatch.setattr(cache_folder, "FALLBACK_HOME", pathlib.Path("/proc/keras-lpips-fallback"))
    with pytest.raises(OutputError, match="Cannot write the weight cache in .* nor in .*: set KERAS_HOME"):
        cache_folder.cache_dir()


def test_read_only_cache_filled_ahead_of_time_is_read(tmp_path, fallback, monkeypatch):
    """A cache entry in an unwritable home is still read (and verified) where the fallback has none."""
    shared = tmp_path / "shared" / "keras_lpips"  # read-only to this process (simulated: root writes anywhere)
    shared.mkdir(parents=True)
    entry = shared / "alex-imagenet-features.npz"
    entry.write_bytes(b"")
    writable = cache_folder._writable_folder
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "shared"))
    monkeypatch.setattr(cache_folder, "_writable_folder", lambda path, create=True: path != shared and writable(path, create))
    assert cache_folder.imagenet_cache_path("alex") == entry  # read where it is, creating nothing
    assert not fallback.exists()
    with pytest.warns(KerasLPIPSNote, match="is not writable"):  # the fallback is where it would write
        assert cache_folder.imagenet_cache_path("alex", for_writing=True) == fallback / "keras_lpips" / entry.name


def test_a_read_only_cache_is_read_where_nothing_can_be_written(tmp_path, monkeypatch):
    """Entries already cached are read (weights, LiteRT conversions) even where neither the Keras
    home nor the fallback can be written; only fetching then needs a writable folder."""
    shared = tmp_path / "shared" / "keras_lpips"
    shared.mkdir(parents=True)
    entry = shared / "alex-imagenet-features.npz"
    entry.write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "shared"))
    monkeypatch.setattr(cache_folder, "FALLBACK_HOME", pathlib.Path("/proc/keras-lpips-fallback"))
    monkeypatch.setattr(cache_folder, "_writable_folder", lambda path, create=True: False)
    assert cache_folder.imagenet_cache_path("alex") == entry
    assert not cache_folder.imagenet_cache_path("vgg").exists()  # not cached: only a fetch could get it
    with pytest.raises(OutputError, match="Cannot write the weight cache"):
        cache_folder.imagenet_cache_path("vgg", for_writing=True)


@pytest.mark.parametrize("run", [run_cli, run_installed], ids=["in-process", "installed"])
def test_command_with_keras_home_a_file(tmp_path, run):
    (tmp_path / "home").write_text("")
    result = run("weights", "list", env={"KERAS_HOME": tmp_path / "home"})
    assert result.returncode == 2 and "is not a folder" in one_error_line(result)


def test_command_with_read_only_keras_home_says_so_once(fallback):
    result = run_cli("weights", "list", env={"KERAS_HOME": READ_ONLY})
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith(f"note: {READ_ONLY}/keras_lpips is not writable"), result.stderr
    assert "not cached" in result.stdout


# --- KERAS_LPIPS_OFFLINE ------------------------------------------------------------------------


@pytest.mark.parametrize("value, offline", [
    ("1", True), ("true", True), ("yes", True), ("TRUE", True), (" Yes ", True),
    ("0", False), ("false", False), ("no", False), ("", False), ("NO", False),
])  # fmt: skip
def test_offline_values(monkeypatch, value, offline):
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", value)
    assert cache_folder.offline() is offline


def test_offline_unset_means_online(monkeypatch):
    monkeypatch.delenv("KERAS_LPIPS_OFFLINE", raising=False)
    assert cache_folder.offline() is False


@pytest.mark.parametrize("value", ["maybe", "2", "on", "offline"])
def test_offline_other_values_are_refused(monkeypatch, value):
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", value)
    from keras_lpips.litert_metric import litert_metric
    from keras_lpips.resolve import MetricSpec

    for fetch in (lambda: pretrained.imagenet_state_dict("alex"), lambda: litert_metric(MetricSpec(net="alex"))):
        with pytest.raises(InputError, match=f"KERAS_LPIPS_OFFLINE must be 1, true or yes .* Received: KERAS_LPIPS_OFFLINE='{value}'"):
            fetch()  # the LiteRT path of `score`, which reads no weights once converted, too


def test_offline_zero_tries_the_sources(monkeypatch):
    """KERAS_LPIPS_OFFLINE=0 is online (it was read as offline): the sources are tried."""
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setattr(sources, "TORCHVISION_URL", f"http://127.0.0.1:{closed_port()}/{{file}}")
    with pytest.raises(WeightsUnavailableError) as caught:
        pretrained.imagenet_state_dict("alex")
    assert "KERAS_LPIPS_OFFLINE is set" not in str(caught.value) and "torchvision's download URL" in str(caught.value)


@pytest.mark.parametrize("run", [run_cli, pytest.param(run_installed, marks=pytest.mark.slow)], ids=["in-process", "installed"])
def test_command_with_a_bad_offline_value(run):
    result = run("weights", "fetch", "--net", "alex", env={"KERAS_LPIPS_OFFLINE": "maybe"})
    assert result.returncode == 2 and "KERAS_LPIPS_OFFLINE must be 1, true or yes" in one_error_line(result)
