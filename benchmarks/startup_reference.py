"""The reference side of benchmarks/startup.py: the ten-line script a user of the reference `lpips`
0.1.4 writes to score the example triplet, started as a whole process with the reference's python
(a venv with torch, torchvision and lpips). `pnet_rand=True`: torchvision's ImageNet file cannot
be downloaded where the benchmark runs, so the trunk is random and the official linear weights
load; the real script also reads a 233 MB file, so this times the reference from below.

    /tmp/refvenv/bin/python benchmarks/startup_reference.py ref.png p0.png p1.png
"""

import sys, warnings, numpy as np, torch, lpips  # noqa: E401
from PIL import Image
warnings.filterwarnings("ignore")  # torchvision's deprecation notes about `pretrained`
model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
ref, p0, p1 = (lpips.im2tensor(np.asarray(Image.open(p).convert("RGB"))) for p in sys.argv[1:4])
with torch.no_grad():
    d0, d1 = model(ref, p0).item(), model(ref, p1).item()
print(f"d(ref, p0) = {d0:.4f}\nd(ref, p1) = {d1:.4f}\n{'p1' if d1 < d0 else 'p0'} is closer to ref")
