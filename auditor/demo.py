"""The embedded default: a small ML-style image built offline, without an engine, and audited.

It is assembled from tar layers by :mod:`auditor.testing` into an OCI layout under the cache
directory (the only place the tool writes besides ``-o``), deterministically: the same auditor
version always builds the same digest. Its content mirrors what real ML images carry, so later
stages (packages, numeric libraries, rules) have something true to say about it.
"""

from __future__ import annotations

from pathlib import Path

from auditor.reference import ImageRef, parse_reference
from auditor.sources.cache import BlobCache
from auditor.testing import LayerBuilder, build_oci_layout

DEMO_TAG = "demo"
DEMO_VERSION = 1  # bump when the content below changes

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""

TRAIN_PY = '''"""A stand-in for training a bidirectional RNN (what cuDNN 8.1 makes nondeterministic)."""
import numpy as np

rng = np.random.default_rng(0)
print(rng.standard_normal(4).sum())
'''


def demo_layers() -> list[LayerBuilder]:
    base = (LayerBuilder()
            .dir("etc").dir("usr").dir("usr/lib").dir("usr/bin").dir("tmp", 0o1777)
            .file("usr/lib/os-release", OS_RELEASE)
            .symlink("etc/os-release", "../usr/lib/os-release")
            .symlink("bin", "usr/bin").symlink("lib", "usr/lib")
            .file("etc/hostname", "demo\n")
            .file("etc/motd", "welcome\n"))
    python = (LayerBuilder()
              .dir("usr/lib/python3").dir("usr/lib/python3/dist-packages")
              .file("usr/lib/python3/dist-packages/numpy-1.24.2.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: numpy\nVersion: 1.24.2\n")
              .file("usr/lib/python3/dist-packages/numpy/version.py", 'version = "1.24.2"\n'))
    app = (LayerBuilder()
           .dir("opt").dir("opt/app")
           .file("opt/app/train.py", TRAIN_PY)
           .hardlink("opt/app/train-copy.py", "opt/app/train.py")
           .whiteout("etc/motd"))
    return [base, python, app]


DEMO_CONFIG = {
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "CUDA_VERSION=11.2.152", "CUDNN_VERSION=8.1.0.77",
                "LD_LIBRARY_PATH=/usr/local/cuda/lib64"],
        "Entrypoint": ["python3", "/opt/app/train.py"],
        "WorkingDir": "/opt/app",
        "User": "1000:1000",
        "Labels": {"org.opencontainers.image.title": "auditor-demo",
                   "org.opencontainers.image.description":
                       "A small synthetic ML-style image built by `auditor demo`"},
    },
}
DEMO_HISTORY = [
    "ADD rootfs.tar / # debian:bookworm-style base",
    "RUN apt-get install -y python3-numpy",
    "COPY train.py /opt/app/ && rm /etc/motd",
]


def build_demo_image(cache: BlobCache) -> ImageRef:
    """Build the demo image's OCI layout under the cache (once per version); its reference."""
    layout = Path(cache.root) / "demo" / f"v{DEMO_VERSION}"
    if not (layout / "index.json").exists():
        staging = Path(cache.temp_path(".demo"))
        staging.unlink()
        build_oci_layout(staging, demo_layers(), tag=DEMO_TAG, config=DEMO_CONFIG,
                         history=DEMO_HISTORY)
        layout.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(layout)
        except OSError:  # another process built it first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return parse_reference(f"oci:{layout}:{DEMO_TAG}")
