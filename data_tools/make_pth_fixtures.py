"""Writes the tiny torch-made weight files that tests/test_safe_pickle.py reads.

Dev-only: needs torch (e.g. `.venv-ref/bin/python data_tools/make_pth_fixtures.py`).
The tests themselves never import torch; they compare what
`keras_lpips.weights.safe_pickle.read_state_dict` finds in

  tests/fixtures/tiny_zip.pth       torch.save's zip format (torch >= 1.6 default)
  tests/fixtures/tiny_legacy.pth    the pre-1.6 format (_use_new_zipfile_serialization=False)

with the values stored in tests/fixtures/tiny_expected.npz (bfloat16 as float32).
The state dict covers the awkward cases: a module's state dict (OrderedDict with
`_metadata`, a 0-d int64 `num_batches_tracked`), a transposed (non-contiguous)
tensor, views with storage offsets that share one storage, a Parameter, and
float64/float16/bfloat16/int32/int8/uint8/bool/uint16 storages.
"""

import pathlib

import numpy as np
import torch

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def tiny_state_dict():
    """The state dict saved in both formats (deterministic)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
    state = model.state_dict()
    base = torch.arange(10, dtype=torch.float32) / 4
    state["transposed"] = torch.randn(3, 4).t()  # shape (4, 3), strides (1, 4)
    state["shared.base"] = base
    state["shared.view"] = base[3:7]  # storage offset 3, same storage as shared.base
    state["shared.strided"] = base.view(2, 5)[:, 1::2]  # offset 1, strides (5, 2)
    state["offset_only"] = (torch.arange(6, dtype=torch.float32) - 2.5)[2:]  # its base is not saved
    state["param"] = torch.nn.Parameter(torch.tensor([1.5, -2.0]))
    state["float64"] = torch.tensor([1 / 3, -2.5e-300, 1e300], dtype=torch.float64)
    state["int64"] = torch.tensor([[-(2**40), 7]], dtype=torch.int64)
    state["float16"] = torch.tensor([0.5, -1.25, 65504.0], dtype=torch.float16)
    state["bfloat16"] = torch.tensor([1.0, -3.5, 0.0078125], dtype=torch.bfloat16)
    state["int32"] = torch.tensor([-7, 2**31 - 1], dtype=torch.int32)
    state["int8"] = torch.tensor([-128, 127], dtype=torch.int8)
    state["uint8"] = torch.tensor([0, 255], dtype=torch.uint8)
    state["bool"] = torch.tensor([True, False, True])
    state["uint16"] = torch.tensor([0, 65535], dtype=torch.uint16)  # saved with _rebuild_tensor_v3
    return state


def expected_arrays(state):
    """{key: numpy array} with the values read_state_dict must return."""
    arrays = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        if tensor.dtype == torch.uint16:
            arrays[key] = np.array(tensor.to(torch.int32).numpy(), np.uint16)
        else:
            arrays[key] = tensor.numpy().copy()
    return arrays


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    state = tiny_state_dict()
    torch.save(state, FIXTURES / "tiny_zip.pth")
    torch.save(state, FIXTURES / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    np.savez(FIXTURES / "tiny_expected.npz", **expected_arrays(state))
    for name in ("tiny_zip.pth", "tiny_legacy.pth", "tiny_expected.npz"):
        print(name, (FIXTURES / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
