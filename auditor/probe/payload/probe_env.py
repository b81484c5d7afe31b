"""What the payload sees of its environment: Python, platform and libc, CPU, threads, the
numerically relevant environment variables, BLAS as loaded at run time, the shared objects in
``/proc/self/maps`` and the network interfaces. Standard library only; every reader tolerates a
missing file (another kernel, a sandbox).
"""

import contextlib
import io
import os
import platform
import re
import sys
import warnings

from probe_util import truncate

ENV_PREFIXES = ("CUDA_", "CUDNN_", "NCCL_", "NVIDIA_", "TF_", "TORCH_", "PYTORCH_", "CUBLAS_",
                "CUBLASLT_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOTO_", "BLIS_", "JAX_",
                "XLA_", "ONEDNN_", "DNNL_", "KERAS_")
ENV_NAMES = ("XLA_FLAGS", "PYTHONHASHSEED", "LD_LIBRARY_PATH", "LD_PRELOAD")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SHARED_OBJECT = re.compile(r"\.so(\.[0-9A-Za-z_.-]*)?$")


def _read(path, limit=1 << 20):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def filtered_env(environ):
    """The numerically relevant variables (CUDA_*, OMP_*, ..., LD_LIBRARY_PATH), sorted."""
    picked = {}
    for name in sorted(environ):
        if name in ENV_NAMES or name.startswith(ENV_PREFIXES):
            picked[name] = environ[name]
    return picked


def python_info():
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable, "compiler": platform.python_compiler()}


def libc():
    """``glibc 2.36``, ``musl`` (with its version when the loader tells) or None."""
    try:
        name, version = platform.libc_ver()
    except (OSError, ValueError):
        name, version = "", ""
    if name:
        return (name + " " + version).strip()
    try:
        confstr = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        confstr = None
    if confstr:
        return confstr
    for folder in ("/lib", "/usr/lib"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        if any(n.startswith("ld-musl-") for n in names):
            return "musl"
    return None


def platform_info():
    return {"system": platform.system(), "machine": platform.machine(),
            "release": platform.release(), "libc": libc()}


def cpu_info():
    text = _read("/proc/cpuinfo") or ""
    model, flags, count = None, [], 0
    vendor = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "Model Name", "cpu model") and model is None:
            model = value
        elif key == "vendor_id" and vendor is None:
            vendor = value
        elif key in ("flags", "Features") and not flags:
            flags = sorted(set(value.split()))
    result = {"model": model, "vendor": vendor, "count": count or os.cpu_count(), "flags": flags,
              "online": os.cpu_count()}
    try:
        result["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        result["affinity"] = None
    result["quota"] = cpu_quota()
    return result


def cpu_quota():
    """The cgroup's CPU limit as ``quota/period`` (``max/100000``: none), or None."""
    text = _read("/sys/fs/cgroup/cpu.max")
    if text:
        return text.strip()
    quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period:
        return quota.strip() + "/" + period.strip()
    return None


def shared_objects():
    """The distinct shared-object paths mapped into this process, sorted."""
    text = _read("/proc/self/maps", 1 << 24) or ""
    paths = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            path = path[:-len(" (deleted)")]
        if path.startswith("/") and SHARED_OBJECT.search(os.path.basename(path)):
            paths.add(path)
    return sorted(paths)


def network_info():
    """Interfaces of this network namespace: ``/proc/net/dev`` (always per namespace), else
    ``/sys/class/net``; ``up`` from the IFF_UP flag where sysfs shows it."""
    names, source = [], None
    text = _read("/proc/net/dev")
    if text is not None:
        source = "/proc/net/dev"
        for line in text.splitlines()[2:]:
            name, colon, _ = line.partition(":")
            if colon and name.strip():
                names.append(name.strip())
    else:
        try:
            names = os.listdir("/sys/class/net")
            source = "/sys/class/net"
        except OSError:
            names = []
    names = sorted(set(names))
    up = []
    for name in names:
        flags = _read(f"/sys/class/net/{name}/flags")
        if flags is not None:
            try:
                if int(flags.strip(), 16) & 0x1:
                    up.append(name)
            except ValueError:
                pass
        elif name == "lo":
            up.append(name)
    return {"interfaces": names, "up": up, "has_network": any(n != "lo" for n in names),
            "source": source}


# -- BLAS, as built and as loaded -------------------------------------------------------------

def capture(function):
    """What ``function()`` prints on sys.stdout, as text."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's "Install `pyyaml` for better output"
        function()
    return buffer.getvalue()


def numpy_info(np):
    result = {"version": str(np.__version__), "blas": None, "lapack": None, "config": None}
    try:
        result["config"] = truncate(capture(np.show_config), 4000)
    except Exception as error:
        result["config"] = f"show_config failed: {error}"
    config = getattr(getattr(np, "__config__", None), "CONFIG", None)  # numpy 1.26+
    if isinstance(config, dict):
        deps = config.get("Build Dependencies", {})
        for key in ("blas", "lapack"):
            entry = deps.get(key) or {}
            if entry.get("name"):
                result[key] = " ".join(str(v) for v in (entry.get("name"), entry.get("version"))
                                       if v and v != "unknown")
        result["simd"] = config.get("SIMD Extensions")
    else:  # older numpy: the distutils info dicts
        module = getattr(np, "__config__", None)
        for key, names in (("blas", ("blas_ilp64_opt_info", "blas_opt_info", "openblas_info",
                                      "blas_mkl_info", "blas_info")),
                           ("lapack", ("lapack_ilp64_opt_info", "lapack_opt_info",
                                       "openblas_lapack_info", "lapack_mkl_info", "lapack_info"))):
            for name in names:
                info = getattr(module, name, None)
                if isinstance(info, dict) and info:
                    libraries = ",".join(dict.fromkeys(info.get("libraries", [])))
                    result[key] = "{}: {}".format(name, libraries or "?")
                    break
    return result


_BLAS_NAME = re.compile(r"(openblas|blas|mkl_rt|mkl_core|blis|flexiblas)", re.IGNORECASE)


def _blas_calls(ctypes):
    """(key, symbol names to try in order, return type) of what BLAS libraries say of themselves."""
    openblas = ("openblas_get_{}", "openblas_get_{}64_", "scipy_openblas_get_{}64_",
                "scipy_openblas_get_{}")
    return (
        ("config", tuple(n.format("config") for n in openblas), ctypes.c_char_p),
        ("core", tuple(n.format("corename") for n in openblas), ctypes.c_char_p),
        ("threads", (*(n.format("num_threads") for n in openblas), "MKL_Get_Max_Threads",
                     "bli_thread_get_num_threads"), ctypes.c_int),
        ("parallel", tuple(n.format("parallel") for n in openblas), ctypes.c_int),
        ("version", ("bli_info_get_version_str",), ctypes.c_char_p),
    )


def blas_runtime(paths):
    """For each BLAS library already loaded: what it says of itself (OpenBLAS: its config and
    the core its dynamic dispatch chose; MKL and BLIS: threads). Opened with RTLD_NOLOAD, so
    nothing new is loaded."""
    import ctypes  # here: a Python built without libffi still runs the rest

    calls = _blas_calls(ctypes)
    found = []
    mode = getattr(os, "RTLD_NOLOAD", 4) | getattr(os, "RTLD_LAZY", 1)
    for path in paths:
        base = os.path.basename(path)
        if not _BLAS_NAME.search(base) or "lapack" in base.lower():
            continue
        try:
            library = ctypes.CDLL(path, mode=mode)
        except OSError:
            continue
        entry = {"path": path}
        for key, symbols, restype in calls:
            for symbol in symbols:
                function = getattr(library, symbol, None)
                if function is None:
                    continue
                function.restype = restype
                function.argtypes = []
                try:
                    value = function()
                except Exception:
                    continue
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace").strip()
                entry[key] = value
                break
        if len(entry) > 1:
            found.append(entry)
    return found


def threads_info(environ, frameworks, blas):
    result = {name: environ.get(name) for name in THREAD_VARIABLES}
    torch = frameworks.get("torch") or {}
    tensorflow = frameworks.get("tensorflow") or {}
    numpy = frameworks.get("numpy") or {}
    result["torch"] = torch.get("num_threads")
    result["torch_interop"] = torch.get("interop_threads")
    result["tensorflow_intra"] = tensorflow.get("intra_op_threads")
    result["tensorflow_inter"] = tensorflow.get("inter_op_threads")
    summary = numpy.get("blas")
    loaded = [b for b in blas if "config" in b or "threads" in b]
    if loaded:
        first = loaded[0]
        described = str(first.get("config") or first.get("version") or "").strip()
        if first.get("core"):
            described += " (core {})".format(first["core"])
        summary = described.strip() or summary
        result["blas_threads"] = first.get("threads")
    result["numpy_blas"] = summary
    result["blas_runtime"] = blas
    return result


def nvidia_driver():
    text = _read("/proc/driver/nvidia/version")
    if not text:
        return None
    match = re.search(r"Kernel Module\s+([0-9.]+)", text)
    return match.group(1) if match else text.splitlines()[0].strip()
