"""Deterministic random backbone weights shared by the parity fixtures and tests.

The fixture script (run with torch) and the parity tests (run without torch)
both call `seeded_state_dict` with the parameter shapes recorded in the fixture,
so the fixtures need not store megabytes of weights. Depends on numpy only.
"""

import numpy as np


def seeded_state_dict(shapes, seed):
    """Returns {torchvision key: float32 array} drawn from `np.random.default_rng(seed)`.

    Args:
        shapes: ordered mapping of torchvision parameter names (`features.0.weight`,
            `features.0.bias`, ...) to their torch shapes (OIHW for kernels).
        seed: integer seed.

    Kernels are He-normal (std sqrt(2 / fan_in)) so activations keep their scale
    through deep stacks; biases are uniform in [-0.1, 0.1]. Keys are drawn in
    sorted order so the result does not depend on the mapping's order.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(int(s) for s in shapes[key])
        if key.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            values = rng.uniform(-0.1, 0.1, size=shape)
        state[key] = values.astype(np.float32)
    return state
