"""The embedded default: a small ML-style image built offline, without an engine, and audited.

It is assembled from tar layers by :mod:`auditor.testing` into an OCI layout under the cache
directory (the only place the tool writes besides ``-o``), deterministically: the same auditor
version always builds the same digest. Its content mirrors what real ML images carry, so later
stages (packages, numeric libraries, rules) have something true to say about it.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from auditor.elfwriter import build_shared_object
from auditor.reference import ImageRef, parse_reference
from auditor.sources.cache import BlobCache
from auditor.testing import LayerBuilder, build_oci_layout

DEMO_TAG = "demo"
DEMO_VERSION = 3  # bump when the content below changes

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


LIBDIR = "usr/lib/x86_64-linux-gnu"

# dpkg's record of the cuDNN package, as NVIDIA's CUDA 11.2 images carry it
DPKG_STATUS = """Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12985
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries

Package: libcudnn8
Status: install ok installed
Priority: optional
Section: multiverse/libs
Installed-Size: 1765120
Maintainer: cudatools <cudatools@nvidia.com>
Architecture: amd64
Version: 8.1.0.77-1+cuda11.2
Description: cuDNN runtime libraries

"""
CUDNN_PARTS = ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train")
CUDNN_FILES = [f"{LIBDIR}/libcudnn.so.8.1.0",
               *(f"{LIBDIR}/libcudnn_{part}.so.8.1.0" for part in CUDNN_PARTS)]
CUDA_LIB = "usr/local/cuda-11.2/targets/x86_64-linux/lib"

# TensorFlow 2.8's build_info.py has this shape (an OrderedDict since TF 2.4)
TF_BUILD_INFO = """# Copyright 2020 The TensorFlow Authors. All Rights Reserved.
import collections

build_info = collections.OrderedDict([('cpu_compiler', '/dt9/usr/bin/gcc'), \
('cuda_compute_capabilities', ['sm_35', 'sm_50', 'sm_60', 'sm_70', 'sm_75', 'compute_80']), \
('cuda_version', '11.2'), ('cudnn_version', '8'), ('is_cuda_build', True), \
('is_rocm_build', False), ('is_tensorrt_build', True)])
"""
SITE = "usr/local/lib/python3.11/dist-packages"


def demo_layers() -> list[LayerBuilder]:
    """A TensorFlow 2.8 GPU-style image: the numeric stack is small stand-in libraries written
    by :mod:`auditor.elfwriter`, whose versions are real ELF getters and strings."""
    base = (LayerBuilder()
            .dir("etc").dir("usr").dir("usr/lib").dir("usr/bin").dir("tmp", 0o1777)
            .file("usr/lib/os-release", OS_RELEASE)
            .symlink("etc/os-release", "../usr/lib/os-release")
            .symlink("bin", "usr/bin").symlink("lib", "usr/lib")
            .file("etc/hostname", "demo\n")
            .file("etc/motd", "welcome\n")
            .dir("var").dir("var/lib").dir("var/lib/dpkg").dir("var/lib/dpkg/info")
            .file("var/lib/dpkg/status", DPKG_STATUS)
            .file("var/lib/dpkg/info/libcudnn8.list", "/.\n/usr\n" + "".join(
                f"/{path}\n" for path in CUDNN_FILES)))
    cuda = (LayerBuilder()
            .dir(LIBDIR)
            .file(CUDNN_FILES[0], build_shared_object("libcudnn.so.8"))
            .symlink(f"{LIBDIR}/libcudnn.so.8", "libcudnn.so.8.1.0")
            .file(CUDNN_FILES[1], build_shared_object(
                "libcudnn_ops_infer.so.8", functions={"cudnnGetVersion": 8100}))
            .file(f"{LIBDIR}/libnccl.so.2.7.8", build_shared_object(
                "libnccl.so.2", stores={"ncclGetVersion": 2708},
                strings=["NCCL version 2.7.8+cuda11.0"]))
            .symlink(f"{LIBDIR}/libnccl.so.2", "libnccl.so.2.7.8")
            # the CUDA 11.2 toolkit's cuBLAS 11.4.1, where NVIDIA's images put it
            .dir("usr/local").dir("usr/local/cuda-11.2").dir(CUDA_LIB)
            .file(f"{CUDA_LIB}/libcublasLt.so.11.4.1.1043", build_shared_object(
                "libcublasLt.so.11", functions={"cublasLtGetVersion": 110401}))
            .symlink(f"{CUDA_LIB}/libcublasLt.so.11", "libcublasLt.so.11.4.1.1043")
            .file(f"{CUDA_LIB}/libcublas.so.11.4.1.1043", build_shared_object(
                "libcublas.so.11", needed=["libcublasLt.so.11"]))
            .symlink(f"{CUDA_LIB}/libcublas.so.11", "libcublas.so.11.4.1.1043")
            .symlink("usr/local/cuda-11.2/lib64", "targets/x86_64-linux/lib")
            .symlink("usr/local/cuda", "cuda-11.2"))
    for part, path in zip(CUDNN_PARTS, CUDNN_FILES[1:], strict=True):
        if part != "ops_infer":
            cuda.file(path, build_shared_object(f"libcudnn_{part}.so.8"))
        cuda.symlink(path.removesuffix(".1.0"), posixpath.basename(path))
    python = (LayerBuilder()
              .dir("usr/lib/python3").dir("usr/lib/python3/dist-packages")
              .file("usr/lib/python3/dist-packages/numpy-1.24.2.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: numpy\nVersion: 1.24.2\n")
              .file("usr/lib/python3/dist-packages/numpy/version.py", 'version = "1.24.2"\n')
              .file(f"{SITE}/tensorflow_gpu-2.8.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: tensorflow-gpu\nVersion: 2.8.0\n")
              .file(f"{SITE}/tensorflow_gpu-2.8.0.dist-info/INSTALLER", "pip\n")
              .file(f"{SITE}/tensorflow/python/platform/build_info.py", TF_BUILD_INFO)
              # TF's extension module and framework library (stand-ins: the real ones need libc)
              .file(f"{SITE}/tensorflow/python/_pywrap_tensorflow_internal.so",
                    build_shared_object("_pywrap_tensorflow_internal.so",
                                        needed=["libtensorflow_framework.so.2"],
                                        runpath="$ORIGIN/:$ORIGIN/.."))
              .file(f"{SITE}/tensorflow/libtensorflow_framework.so.2",
                    build_shared_object("libtensorflow_framework.so.2")))
    app = (LayerBuilder()
           .dir("opt").dir("opt/app")
           .file("opt/app/train.py", TRAIN_PY)
           .hardlink("opt/app/train-copy.py", "opt/app/train.py")
           .whiteout("etc/motd"))
    return [base, cuda, python, app]


DEMO_CONFIG = {
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "CUDA_VERSION=11.2.152", "CUDNN_VERSION=8.1.0.77", "NCCL_VERSION=2.8.4",
                "LD_LIBRARY_PATH=/usr/local/cuda/lib64"],
        "Entrypoint": ["python3", "/opt/app/train.py"],
        "WorkingDir": "/opt/app",
        "User": "1000:1000",
        "Labels": {"org.opencontainers.image.title": "auditor-demo",
                   "org.opencontainers.image.description":
                       "A small synthetic TensorFlow 2.8 GPU-style image built by `auditor demo`"},
    },
}
DEMO_HISTORY = [
    "ADD rootfs.tar / # debian:bookworm-style base",
    "RUN apt-get install -y libcudnn8=8.1.0.77-1+cuda11.2 libnccl2",
    "RUN pip install tensorflow-gpu==2.8.0",
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
