"""NumPy: kernels (matmul, reductions in several orders, a 2-D convolution through stride tricks)
and two hand-written models (``numpy.mlp``, ``numpy.rnn``: forward, backward and SGD in NumPy).

Everything is float32 unless a kernel says float64; weights start from ``RandomState(seed)``.
"""

import probe_data
from probe_util import (
    Digest,
    batches,
    epoch_orders,
    epoch_record,
    evaluate_binary,
    kernel_record,
    model_result,
    sha256_bytes,
)


def array_bytes(np, array, dtype="<f4"):
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def kernel_entry(name, dtype, value, np):
    """A ``kernels`` entry of a NumPy result (0-d results stay 0-d)."""
    little = np.array(value, dtype=np.dtype(dtype).newbyteorder("<"), order="C")
    return kernel_record(name, dtype, little.shape, little.tobytes(), little.ravel().tolist())


def conv2d(np, x, w):
    """Valid cross-correlation, stride 1: (N, C, H, W) * (K, C, R, S) -> (N, K, H-R+1, W-S+1),
    through a strided view of the windows and one tensordot (a BLAS gemm)."""
    n, c, h, width = x.shape
    _, _, r, s = w.shape
    ho, wo = h - r + 1, width - s + 1
    st = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x, shape=(n, c, ho, wo, r, s), strides=(st[0], st[1], st[2], st[3], st[2], st[3]),
        writeable=False)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # N, Ho, Wo, K
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def kernels(ctx, np):
    """Yields ``(name, dtype, thunk)``; the caller times, records and catches each."""
    inputs = probe_data.kernel_inputs(ctx.seed)
    side = probe_data.MATMUL_SIDE
    a_list, b_list = inputs["matmul"]

    def matmul(dtype):
        def run():
            a = np.array(a_list, dtype=dtype).reshape(side, side)
            b = np.array(b_list, dtype=dtype).reshape(side, side)
            return a @ b
        return run

    yield "numpy.matmul", "float32", matmul(np.float32)
    yield "numpy.matmul", "float64", matmul(np.float64)

    vector = np.array(inputs["sum"], dtype=np.float32)
    side_sum = 1 << 10
    # the same float32 values summed in different orders: the results may differ in the last bits
    yield "numpy.sum", "float32", lambda: np.sum(vector)  # pairwise, vectorised
    yield "numpy.sum_reversed", "float32", lambda: np.sum(vector[::-1])
    yield "numpy.sum_blocked", "float32", lambda: np.sum(
        np.sum(vector.reshape(side_sum, side_sum), axis=1))
    yield "numpy.sum_strided", "float32", lambda: np.sum(
        np.sum(vector.reshape(side_sum, side_sum), axis=0))
    yield "numpy.sum_sequential", "float32", lambda: np.cumsum(vector)[-1]
    yield "numpy.sum", "float64", lambda: np.sum(vector.astype(np.float64))

    x_list, w_list = inputs["conv"]

    def conv():
        x = np.array(x_list, dtype=np.float32).reshape(probe_data.CONV_INPUT)
        w = np.array(w_list, dtype=np.float32).reshape(probe_data.CONV_WEIGHT)
        return conv2d(np, x, w)

    yield "numpy.conv2d", "float32", conv


# -- models -----------------------------------------------------------------------------------

BATCH = 32


def _glorot(np, rs, rows, columns):
    limit = (6.0 / (rows + columns)) ** 0.5
    return rs.uniform(-limit, limit, size=(rows, columns)).astype(np.float32)


def _sigmoid(np, z):
    return (np.float32(0.5) * (np.tanh(np.float32(0.5) * z) + np.float32(1.0))).astype(np.float32)


def _bce(np, z, y):
    """Mean binary cross-entropy with logits (float32)."""
    return np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))


def _weights_digest(np, params):
    digest = Digest()
    for param in params:
        digest.update(array_bytes(np, param))
    return digest.hexdigest()


def _clip(np, grads, limit):
    norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
    if norm > limit:
        scale = np.float32(limit / norm)
        grads = [(g * scale).astype(np.float32) for g in grads]
    return grads


class Adam:
    """Adam (Kingma & Ba), float32, written out: the same update on every NumPy."""

    def __init__(self, np, params, rate, beta1=0.9, beta2=0.999, eps=1e-8):
        self.np = np
        self.rate, self.beta1, self.beta2, self.eps = rate, beta1, beta2, eps
        self.moments = [np.zeros_like(p) for p in params]
        self.squares = [np.zeros_like(p) for p in params]
        self.step = 0

    def update(self, params, grads):
        np = self.np
        self.step += 1
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        scale = np.float32(self.rate * (1.0 - self.beta2 ** self.step) ** 0.5
                          / (1.0 - self.beta1 ** self.step))
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.moments[i] = (b1 * self.moments[i] + (np.float32(1.0) - b1) * g).astype(np.float32)
            self.squares[i] = (b2 * self.squares[i] + (np.float32(1.0) - b2) * g * g).astype(np.float32)
            step = scale * self.moments[i] / (np.sqrt(self.squares[i]) + np.float32(self.eps))
            out.append((p - step).astype(np.float32))
        return out


def mlp(ctx, np, epochs):
    """A dense binary classifier (16 -> 32 tanh -> 1) on the imbalanced tabular set; SGD."""
    data = probe_data.tabular(ctx.seed)
    width = data.width
    x_train, x_test = (np.array(part, dtype=np.float32).reshape(-1, width) for part in data.split_x())
    y_train, y_test = data.split_y()
    y_column = np.array(y_train, dtype=np.float32).reshape(-1, 1)
    rs = np.random.RandomState(ctx.seed)
    hidden = 32
    params = [_glorot(np, rs, width, hidden), np.zeros(hidden, np.float32),
              _glorot(np, rs, hidden, 1), np.zeros(1, np.float32)]
    rate = np.float32(0.2)
    history = []

    def forward(x, p):
        a1 = np.tanh(x @ p[0] + p[1])
        return a1, a1 @ p[2] + p[3]

    for order in epoch_orders(ctx.seed, "tabular", epochs, data.train):
        losses, correct = [], 0
        for batch in batches(order, BATCH):
            xb, yb = x_train[batch], y_column[batch]
            a1, z = forward(xb, params)
            losses.append(float(_bce(np, z, yb)))
            correct += int(np.sum((z > 0).astype(np.float32) == yb))
            dz = (_sigmoid(np, z) - yb) / np.float32(len(batch))
            da1 = dz @ params[2].T
            dz1 = da1 * (np.float32(1.0) - a1 * a1)
            grads = [xb.T @ dz1, np.sum(dz1, axis=0), a1.T @ dz, np.sum(dz, axis=0)]
            params = [(p - rate * g).astype(np.float32) for p, g in zip(params, grads)]
        history.append(epoch_record(losses, correct, data.train))
    _, logits = forward(x_test, params)
    logits = logits.reshape(-1)
    loss, accuracy, predictions = evaluate_binary(logits.tolist(), y_test)
    return model_result("numpy.mlp", "mlp", loss, accuracy, predictions, y_test,
                        _weights_digest(np, params), sha256_bytes(array_bytes(np, logits)),
                        history, sum(int(p.size) for p in params), (data.train, data.test), "cpu")


def rnn(ctx, np, epochs):
    """An Elman RNN (one-hot tokens -> 24 tanh units -> 1) on the token sentiment task; full
    backpropagation through time, gradient norm clipped at 5, Adam."""
    data = probe_data.tokens(ctx.seed)
    length = data.width
    vocabulary = probe_data.TOKENS_VOCABULARY
    x_train, x_test = (np.array(part, dtype=np.int64).reshape(-1, length) for part in data.split_x())
    y_train, y_test = data.split_y()
    y_column = np.array(y_train, dtype=np.float32).reshape(-1, 1)
    rs = np.random.RandomState(ctx.seed)
    hidden = 24
    params = [_glorot(np, rs, vocabulary, hidden), _glorot(np, rs, hidden, hidden),
              np.zeros(hidden, np.float32), _glorot(np, rs, hidden, 1), np.zeros(1, np.float32)]
    optimizer = Adam(np, params, 0.01)
    history = []

    def forward(x, p):
        states = [np.zeros((x.shape[0], hidden), np.float32)]
        for t in range(length):
            states.append(np.tanh(p[0][x[:, t]] + states[-1] @ p[1] + p[2]))
        return states, states[-1] @ p[3] + p[4]

    for order in epoch_orders(ctx.seed, "tokens", epochs, data.train):
        losses, correct = [], 0
        for batch in batches(order, BATCH):
            xb, yb = x_train[batch], y_column[batch]
            states, z = forward(xb, params)
            losses.append(float(_bce(np, z, yb)))
            correct += int(np.sum((z > 0).astype(np.float32) == yb))
            dz = (_sigmoid(np, z) - yb) / np.float32(len(batch))
            g_embed = np.zeros_like(params[0])
            g_recurrent = np.zeros_like(params[1])
            g_bias = np.zeros_like(params[2])
            g_out = states[-1].T @ dz
            g_out_bias = np.sum(dz, axis=0)
            dh = dz @ params[3].T
            for t in range(length - 1, -1, -1):
                h = states[t + 1]
                da = dh * (np.float32(1.0) - h * h)
                np.add.at(g_embed, xb[:, t], da)  # unbuffered, in index order
                g_recurrent += states[t].T @ da
                g_bias += np.sum(da, axis=0)
                dh = da @ params[1].T
            grads = _clip(np, [g_embed, g_recurrent, g_bias, g_out, g_out_bias], 5.0)
            params = optimizer.update(params, grads)
        history.append(epoch_record(losses, correct, data.train))
    _, logits = forward(x_test, params)
    logits = logits.reshape(-1)
    loss, accuracy, predictions = evaluate_binary(logits.tolist(), y_test)
    return model_result("numpy.rnn", "rnn", loss, accuracy, predictions, y_test,
                        _weights_digest(np, params), sha256_bytes(array_bytes(np, logits)),
                        history, sum(int(p.size) for p in params), (data.train, data.test), "cpu")


#: name -> (function, default epochs)
MODELS = {"numpy.mlp": (mlp, 20), "numpy.rnn": (rnn, 8)}
