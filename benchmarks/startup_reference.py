"""The reference side of benchmarks/startup.py: a ten-line torch script scoring the example triplet
as lpips 0.1.4 does (its AlexNet trunk and linear heads, random weights: torchvision for torch
2.13 could not be installed beside it), started as a whole process with the reference's python.

    /tmp/refvenv/bin/python benchmarks/startup_reference.py ref.png p0.png p1.png
"""

import sys, numpy as np, torch
from PIL import Image
torch.manual_seed(0)  # lpips 0.1.4's AlexNet trunk (torchvision's shapes) and linear heads, random weights
convs = [torch.nn.Conv2d(*shape) for shape in [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]]
lins = [torch.nn.Conv2d(c.out_channels, 1, 1, bias=False) for c in convs]
shift, scale = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1), torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
def feats(x):
    out, x = [], (x - shift) / scale
    for i, conv in enumerate(convs):
        x = torch.relu(conv(torch.max_pool2d(x, 3, 2) if i in (1, 2) else x)); out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
    return out
lpips = lambda a, b: sum(lin((fa - fb) ** 2).mean((2, 3)) for lin, fa, fb in zip(lins, feats(a), feats(b))).item()
ref, p0, p1 = (torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)[None] for p in sys.argv[1:4])
with torch.inference_mode():
    d0, d1 = lpips(ref, p0), lpips(ref, p1)
print(f"d(ref, p0) = {d0:.4f}\nd(ref, p1) = {d1:.4f}\n{'p1' if d1 < d0 else 'p0'} is closer to ref")
