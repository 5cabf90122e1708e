"""Records two training steps of the reference `lpips.Trainer` for the keras-lpips trainer parity test.

Dev-only (needs torch, torchvision, lpips 0.1.4, numpy; not TensorFlow). Run in .venv-ref:

    .venv-ref/bin/python data_tools/make_trainer_fixture.py [--out tests/fixtures/reference_trainer.npz]

It builds the reference trainer exactly as its `train.py` does for AlexNet in "lin" mode
(`Trainer.initialize(model='lpips', net='alex', is_train=True, lr=1e-4, beta1=0.5)`: LPIPS with
dropout before the linear layers, a frozen backbone, `BCERankingLoss` with its `Dist2LogitLayer`,
one `Adam(betas=(0.5, 0.999))` over both), then replaces its random weights with seeded ones:

* backbone: `seeded_state_dict(shapes, SEED)` (`data_tools/seeded_weights.py`), as the parity
  fixtures do (`alex/shapes` and `alex/seed` stored so the test regenerates it without torch);
* linear weights `lin0..lin4`: seeded, non-negative, a fifth of them below 1e-4 so that an Adam
  step (about lr = 1e-4 in size) takes some below zero and the reference's clamp acts;
* ranking head: seeded like torch's default initialisation (uniform in +-1/sqrt(fan_in)).

Dropout is switched off (the dropout modules put in eval mode) so the steps are deterministic.
Then, on one fixed batch of 4 seeded 64x64 triplets and judges, it runs
`Trainer.optimize_parameters()` twice (forward_train, zero_grad, backward of the mean BCE,
Adam step, clamp_weights) and stores, as float32:

    x_ref, x_p0, x_p1   (4, 64, 64, 3) NHWC in [-1, 1]      judge (4,)
    init/lin{k} (C_k,)  init/rank/model.{0,2,4}.{weight,bias} (torch layouts: (out, in, 1, 1))
    step{1,2}/lin{k}, step{1,2}/rank/...  the weights after each step
    loss (2,)           the loss each step minimised (computed before its update)
    d0, d1 (2, 4)       the distances each step saw
"""

import argparse
import json
import pathlib
import re
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from data_tools.make_parity_fixtures import import_lpips  # noqa: E402
from data_tools.seeded_weights import seeded_state_dict  # noqa: E402

SEED = 2024
N, SIZE = 4, 64
JUDGE = (0.0, 1.0, 0.25, 0.8)


def tv_key(name):
    return re.sub(r"^slice\d+\.", "features.", name)


def build_trainer(lpips, rng):
    trainer = lpips.Trainer()
    trainer.initialize(model="lpips", net="alex", pnet_rand=True, pnet_tune=False, use_gpu=False,
                       is_train=True, lr=1e-4, beta1=0.5, version="0.1")
    net = trainer.net
    shapes = [[tv_key(n), list(p.shape)] for n, p in net.net.named_parameters()]
    state = seeded_state_dict(dict(shapes), SEED)
    init = {}
    with torch.no_grad():
        for name, param in net.net.named_parameters():
            param.copy_(torch.from_numpy(state[tv_key(name)]))
        for k, lin in enumerate(net.lins):
            channels = lin.model[-1].weight.shape[1]
            w = rng.uniform(0.0, 0.1, channels)
            small = rng.random(channels) < 0.2
            w[small] = rng.uniform(0.0, 1e-4, int(small.sum()))
            lin.model[-1].weight.copy_(torch.from_numpy(w.astype(np.float32)).reshape(1, channels, 1, 1))
            init[f"init/lin{k}"] = w.astype(np.float32)
        for name, param in trainer.rankLoss.net.named_parameters():
            fan_in = param.shape[1] if param.dim() == 4 else dict(trainer.rankLoss.net.named_parameters())[
                name.replace("bias", "weight")].shape[1]
            value = rng.uniform(-1.0, 1.0, tuple(param.shape)) / np.sqrt(fan_in)
            param.copy_(torch.from_numpy(value.astype(np.float32)))
            init[f"init/rank/{name}"] = value.astype(np.float32)
    for lin in net.lins:  # dropout off: deterministic steps
        for module in lin.model:
            if isinstance(module, torch.nn.Dropout):
                module.eval()
    assert not any(p.requires_grad for p in net.net.parameters()), "lin mode: the backbone must be frozen"
    return trainer, shapes, init


def batch(rng):
    ref = rng.uniform(-1.0, 1.0, (N, SIZE, SIZE, 3))
    p0 = np.clip(ref + 0.3 * rng.standard_normal(ref.shape), -1.0, 1.0)
    p1 = np.clip(ref + 0.6 * rng.standard_normal(ref.shape), -1.0, 1.0)
    return {k: v.astype(np.float32) for k, v in (("x_ref", ref), ("x_p0", p0), ("x_p1", p1))}


def weights(trainer, prefix):
    out = {f"{prefix}/lin{k}": lin.model[-1].weight.detach().numpy().reshape(-1).copy()
           for k, lin in enumerate(trainer.net.lins)}
    for name, param in trainer.rankLoss.net.named_parameters():
        out[f"{prefix}/rank/{name}"] = param.detach().numpy().copy()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "reference_trainer.npz")
    args = parser.parse_args()
    lpips = import_lpips()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)
    trainer, shapes, out = build_trainer(lpips, rng)
    images = batch(rng)
    out.update(images)
    out["judge"] = np.array(JUDGE, np.float32)
    to_torch = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # noqa: E731
    data = {"ref": to_torch(images["x_ref"]), "p0": to_torch(images["x_p0"]), "p1": to_torch(images["x_p1"]),
            "judge": torch.tensor(JUDGE, dtype=torch.float32).reshape(N, 1, 1, 1)}
    losses, d0s, d1s = [], [], []
    for step in (1, 2):
        trainer.set_input(data)
        trainer.optimize_parameters()
        losses.append(float(trainer.loss_total.item()))
        d0s.append(trainer.d0.detach().numpy().reshape(-1))
        d1s.append(trainer.d1.detach().numpy().reshape(-1))
        out.update(weights(trainer, f"step{step}"))
        print(f"step {step}: loss {losses[-1]:.6f}  d0 {d0s[-1]}  d1 {d1s[-1]}")
    out["loss"] = np.array(losses, np.float32)
    out["d0"], out["d1"] = np.stack(d0s).astype(np.float32), np.stack(d1s).astype(np.float32)
    out["alex/seed"] = np.array(SEED)
    out["alex/shapes"] = np.array(json.dumps(shapes))
    clamped = sum(int((out[f"step2/lin{k}"] == 0).sum() - (out[f"init/lin{k}"] == 0).sum()) for k in range(5))
    print(f"linear weights clamped to 0 over the two steps: {clamped}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
