"""JAX: kernels (float32 matmul, sums, conv2d through ``lax``) and ``jax.dense``: a hand-written
MLP trained with ``jax.value_and_grad`` and Adam written out here. Weights start from NumPy's
``RandomState(seed)`` (JAX depends on NumPy).
"""

import os

import probe_data
from probe_util import (
    Digest,
    ProbeError,
    batches,
    epoch_orders,
    epoch_record,
    evaluate_binary,
    kernel_from_values,
    model_result,
    sha256_bytes,
)

BATCH = 32


def before_import(ctx):
    if ctx.device == "cpu":
        ctx.set_env("JAX_PLATFORMS", "cpu")
    elif ctx.deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            ctx.set_env("XLA_FLAGS", (flags + " --xla_gpu_deterministic_ops=true").strip())


def setup(ctx, jax):
    return {}


def _call(function, default=None):
    try:
        return function()
    except Exception:
        return default


def info(ctx, jax):
    jaxlib = _call(lambda: __import__("jaxlib"))
    result = {
        "version": str(jax.__version__),
        "jaxlib": _call(lambda: str(jaxlib.__version__)) if jaxlib is not None else None,
        "backend": _call(lambda: str(jax.default_backend())),
        "devices": _call(lambda: [str(d) for d in jax.devices()]),
        "x64": _call(lambda: bool(jax.config.read("jax_enable_x64"))),
        "default_matmul_precision": _call(lambda: jax.config.read("jax_default_matmul_precision")),
    }
    result.update(ctx.notes.get("jax", {}))
    return result


def gpus(jax):
    found = []
    for index, dev in enumerate(_call(lambda: jax.devices("gpu"), []) or []):
        found.append({"name": str(getattr(dev, "device_kind", dev)),
                      "capability": getattr(dev, "compute_capability", None),
                      "memory": None, "framework": "jax", "index": index})
    return found


def _device(ctx, jax):
    if ctx.device == "gpu":
        devices = _call(lambda: jax.devices("gpu"), [])
        if not devices:
            raise ProbeError("no GPU visible")
        return devices[0]
    return jax.devices("cpu")[0]


def _put(ctx, jax, array):
    return jax.device_put(array, _device(ctx, jax))


# -- kernels ----------------------------------------------------------------------------------

def kernel_entry(name, dtype, value, jax):
    import numpy as np
    array = np.asarray(value)
    return kernel_from_values(name, dtype, list(array.shape), array.ravel().tolist())


def kernels(ctx, jax):
    import numpy as np
    jnp = jax.numpy
    inputs = probe_data.kernel_inputs(ctx.seed)
    side = probe_data.MATMUL_SIDE
    a_list, b_list = inputs["matmul"]

    def matmul():
        a = _put(ctx, jax, np.array(a_list, dtype=np.float32).reshape(side, side))
        b = _put(ctx, jax, np.array(b_list, dtype=np.float32).reshape(side, side))
        return jnp.matmul(a, b)

    yield "jax.matmul", "float32", matmul
    vector = np.array(inputs["sum"], dtype=np.float32)
    yield "jax.sum", "float32", lambda: jnp.sum(_put(ctx, jax, vector))
    yield "jax.sum_reversed", "float32", lambda: jnp.sum(_put(ctx, jax, vector[::-1].copy()))
    x_list, w_list = inputs["conv"]

    def conv():
        x = _put(ctx, jax, np.array(x_list, dtype=np.float32).reshape(probe_data.CONV_INPUT))
        w = _put(ctx, jax, np.array(w_list, dtype=np.float32).reshape(probe_data.CONV_WEIGHT))
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    yield "jax.conv2d", "float32", conv


# -- models -----------------------------------------------------------------------------------

def _glorot(np, rs, rows, columns):
    limit = (6.0 / (rows + columns)) ** 0.5
    return rs.uniform(-limit, limit, size=(rows, columns)).astype(np.float32)


def dense(ctx, jax, epochs):
    """Two hidden ReLU layers on the imbalanced tabular set (as ``torch.dense``)."""
    import numpy as np
    jnp = jax.numpy
    data = probe_data.tabular(ctx.seed)
    width = data.width
    x_part, x_test_part = data.split_x()
    y_part, y_test = data.split_y()
    x_train = np.array(x_part, dtype=np.float32).reshape(-1, width)
    x_test = np.array(x_test_part, dtype=np.float32).reshape(-1, width)
    y_train = np.array(y_part, dtype=np.float32)
    rs = np.random.RandomState(ctx.seed)
    host = [_glorot(np, rs, width, 32), np.zeros(32, np.float32), _glorot(np, rs, 32, 32),
            np.zeros(32, np.float32), _glorot(np, rs, 32, 1), np.zeros(1, np.float32)]
    params = [_put(ctx, jax, p) for p in host]
    moments = [jnp.zeros_like(p) for p in params]
    squares = [jnp.zeros_like(p) for p in params]

    def forward(p, x):
        h = jax.nn.relu(x @ p[0] + p[1])
        h = jax.nn.relu(h @ p[2] + p[3])
        return (h @ p[4] + p[5]).reshape(-1)

    def loss_fn(p, x, y):
        z = forward(p, x)
        return jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))), z

    rate, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8

    def step(p, m, v, t, x, y):
        (loss, z), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads)]
        v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads)]
        scale = rate * jnp.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p = [pi - scale * mi / (jnp.sqrt(vi) + eps) for pi, mi, vi in zip(p, m, v)]
        return p, m, v, loss, z

    step = jax.jit(step)
    history = []
    t = 0
    for order in epoch_orders(ctx.seed, data.name, epochs, data.train):
        losses, correct = [], 0
        for batch in batches(order, BATCH):
            t += 1
            xb, yb = _put(ctx, jax, x_train[batch]), _put(ctx, jax, y_train[batch])
            params, moments, squares, loss, z = step(params, moments, squares,
                                                     jnp.float32(t), xb, yb)
            losses.append(float(loss))
            correct += int(np.sum((np.asarray(z) > 0).astype(np.float32) == y_train[batch]))
        history.append(epoch_record(losses, correct, data.train))
    logits = np.asarray(jax.jit(forward)(params, _put(ctx, jax, x_test)), dtype=np.float32)
    loss, accuracy, predictions = evaluate_binary(logits.tolist(), y_test)
    digest = Digest()
    for p in params:
        digest.update(np.ascontiguousarray(np.asarray(p), dtype="<f4").tobytes())
    return model_result("jax.dense", "dense", loss, accuracy, predictions, y_test,
                        digest.hexdigest(), sha256_bytes(logits.astype("<f4").tobytes()), history,
                        sum(int(p.size) for p in host), (data.train, data.test),
                        str(_device(ctx, jax)))


MODELS = {"jax.dense": (dense, 10)}
