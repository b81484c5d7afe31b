"""PyTorch: its switches (seed, deterministic algorithms, cuDNN, threads), kernels (matmul, sums,
conv2d) and three models: ``torch.cnn``, ``torch.bilstm``, ``torch.dense``.

Works without NumPy (a PyTorch wheel need not bring it): tensors are built from Python lists and
read back with ``tolist``. Weights start from ``torch.manual_seed(seed)``; the sample order of
every epoch is the payload's own (the same as NumPy's and TensorFlow's).
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
    evaluate_multiclass,
    kernel_from_values,
    model_result,
    pack_float32,
    sha256_bytes,
    truncate,
)

BATCH = 32


def before_import(ctx):
    """Environment the first CUDA call reads: cuBLAS needs a fixed workspace to be deterministic."""
    if ctx.deterministic and ctx.device == "gpu" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        ctx.set_env("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def setup(ctx, torch):
    """Threads and determinism, once after the import; returns notes for the environment."""
    notes = {}
    if ctx.threads is not None:
        torch.set_num_threads(ctx.threads)
        try:
            torch.set_num_interop_threads(ctx.threads)
        except (RuntimeError, AttributeError) as error:  # only before any inter-op work
            notes["interop_threads_error"] = str(error)
    if ctx.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if hasattr(torch, "use_deterministic_algorithms"):
            try:
                torch.use_deterministic_algorithms(True, warn_only=True)  # 1.11+
                notes["deterministic_call"] = "use_deterministic_algorithms(True, warn_only=True)"
            except TypeError:
                torch.use_deterministic_algorithms(True)
                notes["deterministic_call"] = "use_deterministic_algorithms(True)"
        elif hasattr(torch, "set_deterministic"):  # 1.7
            torch.set_deterministic(True)
            notes["deterministic_call"] = "set_deterministic(True)"
    seed(ctx, torch)
    return notes


def seed(ctx, torch):
    torch.manual_seed(ctx.seed)
    if hasattr(torch, "cuda") and torch.cuda.is_available():
        torch.cuda.manual_seed_all(ctx.seed)


def device(ctx, torch):
    if ctx.device == "gpu":
        if not torch.cuda.is_available():
            raise ProbeError("no GPU visible")
        return torch.device("cuda")
    return torch.device("cpu")


def flat(tensor):
    return tensor.detach().to("cpu").contiguous().reshape(-1).tolist()


def _call(function, default=None):
    try:
        return function()
    except Exception:  # an API this version lacks, or a CUDA call without CUDA
        return default


def info(ctx, torch):
    """``environment.frameworks.torch``."""
    backends = torch.backends
    cuda_available = bool(_call(torch.cuda.is_available, False))
    result = {
        "version": str(torch.__version__),
        "cuda": getattr(torch.version, "cuda", None),
        "hip": getattr(torch.version, "hip", None),
        "git": getattr(torch.version, "git_version", None),
        "cudnn": _call(backends.cudnn.version) if hasattr(backends, "cudnn") else None,
        "nccl": None,
        "cuda_available": cuda_available,
        "deterministic": _call(torch.are_deterministic_algorithms_enabled,
                               _call(lambda: torch.is_deterministic())),
        "deterministic_warn_only": _call(torch.is_deterministic_algorithms_warn_only_enabled),
        "cudnn_deterministic": _call(lambda: bool(backends.cudnn.deterministic)),
        "cudnn_benchmark": _call(lambda: bool(backends.cudnn.benchmark)),
        "tf32_matmul": _call(lambda: bool(backends.cuda.matmul.allow_tf32)),
        "tf32_cudnn": _call(lambda: bool(backends.cudnn.allow_tf32)),
        "float32_matmul_precision": _call(torch.get_float32_matmul_precision),
        "mkldnn": _call(lambda: bool(backends.mkldnn.is_available())),
        "mkl": _call(lambda: bool(backends.mkl.is_available())),
        "openmp": _call(lambda: bool(backends.openmp.is_available())),
        "num_threads": _call(torch.get_num_threads),
        "interop_threads": _call(torch.get_num_interop_threads),
        "config": _call(lambda: truncate(torch.__config__.show(), 6000)),
        "parallel_info": _call(lambda: truncate(torch.__config__.parallel_info(), 3000)),
    }
    if cuda_available:
        result["nccl"] = _call(lambda: ".".join(str(v) for v in torch.cuda.nccl.version())
                               if isinstance(torch.cuda.nccl.version(), tuple)
                               else str(torch.cuda.nccl.version()))
    result.update(ctx.notes.get("torch", {}))
    return result


def gpus(torch):
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append({"name": str(props.name), "capability": f"{props.major}.{props.minor}",
                      "memory": int(props.total_memory), "framework": "torch", "index": index})
    return found


# -- kernels ----------------------------------------------------------------------------------

def kernel_entry(name, dtype, value, torch):
    return kernel_from_values(name, dtype, list(value.shape), flat(value))


def kernels(ctx, torch):
    inputs = probe_data.kernel_inputs(ctx.seed)
    side = probe_data.MATMUL_SIDE
    a_list, b_list = inputs["matmul"]

    def matmul(dtype):
        def run():
            on = device(ctx, torch)
            a = torch.tensor(a_list, dtype=dtype, device=on).reshape(side, side)
            b = torch.tensor(b_list, dtype=dtype, device=on).reshape(side, side)
            return torch.matmul(a, b)
        return run

    yield "torch.matmul", "float32", matmul(torch.float32)
    yield "torch.matmul", "float64", matmul(torch.float64)

    vectors = {}

    def vector():
        if "v" not in vectors:
            vectors["v"] = torch.tensor(inputs["sum"], dtype=torch.float32, device=device(ctx, torch))
        return vectors["v"]

    blocks = 1 << 10
    yield "torch.sum", "float32", lambda: torch.sum(vector())
    yield "torch.sum_reversed", "float32", lambda: torch.sum(torch.flip(vector(), [0]))
    yield "torch.sum_blocked", "float32", lambda: torch.sum(torch.sum(vector().reshape(blocks, blocks), 1))
    yield "torch.sum_strided", "float32", lambda: torch.sum(torch.sum(vector().reshape(blocks, blocks), 0))
    yield "torch.sum_sequential", "float32", lambda: torch.cumsum(vector(), 0)[-1]
    yield "torch.sum", "float64", lambda: torch.sum(vector().double())

    x_list, w_list = inputs["conv"]

    def conv():
        import torch.nn.functional as functional
        on = device(ctx, torch)
        x = torch.tensor(x_list, dtype=torch.float32, device=on).reshape(probe_data.CONV_INPUT)
        w = torch.tensor(w_list, dtype=torch.float32, device=on).reshape(probe_data.CONV_WEIGHT)
        return functional.conv2d(x, w)

    yield "torch.conv2d", "float32", conv


# -- models -----------------------------------------------------------------------------------

def _weights_digest(model):
    digest = Digest()
    for _, param in model.named_parameters():
        digest.update(pack_float32(flat(param)))
    return digest.hexdigest()


def _fit(ctx, torch, model, data, x_train, y_train, epochs, rate, binary, name):
    optimizer = torch.optim.Adam(model.parameters(), lr=rate)
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()
    on = x_train.device
    history = []
    for order in epoch_orders(ctx.seed, name, epochs, data.train):
        model.train()
        losses, correct = [], 0
        for batch in batches(order, BATCH):
            index = torch.tensor(batch, dtype=torch.long, device=on)
            xb, yb = x_train[index], y_train[index]
            optimizer.zero_grad()
            out = model(xb)
            if binary:
                out = out.reshape(-1)
            loss = loss_fn(out, yb)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            if binary:
                correct += int(((out > 0).float() == yb).sum().item())
            else:
                correct += int((torch.argmax(out, 1) == yb).sum().item())
        history.append(epoch_record(losses, correct, data.train))
    return history


def _run(ctx, torch, name, kind, data, build, epochs, rate, binary, integer_inputs=False):
    on = device(ctx, torch)
    x_part, x_test_part = data.split_x()
    y_part, y_test = data.split_y()
    shape = (-1, *data.shape)
    x_dtype = torch.long if integer_inputs else torch.float32
    x_train = torch.tensor(x_part, dtype=x_dtype, device=on).reshape(shape)
    x_test = torch.tensor(x_test_part, dtype=x_dtype, device=on).reshape(shape)
    y_dtype = torch.float32 if binary else torch.long
    y_train = torch.tensor(y_part, dtype=y_dtype, device=on)
    seed(ctx, torch)
    model = build(torch).to(on)
    history = _fit(ctx, torch, model, data, x_train, y_train, epochs, rate, binary, data.name)
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
    values = flat(logits)
    if binary:
        loss, accuracy, predictions = evaluate_binary(values, y_test)
    else:
        classes = int(logits.shape[1])
        rows = [values[i:i + classes] for i in range(0, len(values), classes)]
        loss, accuracy, predictions = evaluate_multiclass(rows, y_test)
    parameters = sum(int(p.numel()) for p in model.parameters())
    return model_result(name, kind, loss, accuracy, predictions, y_test, _weights_digest(model),
                        sha256_bytes(pack_float32(values)), history, parameters,
                        (data.train, data.test), str(on))


def _cnn_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, probe_data.DIGITS_CLASSES))


def cnn(ctx, torch, epochs):
    """Two 3x3 convolutions with max pooling, then a linear layer: ten digit-like classes."""
    return _run(ctx, torch, "torch.cnn", "cnn", probe_data.digits(ctx.seed), _cnn_model, epochs,
                0.002, binary=False)


def _bilstm_model(torch):
    nn = torch.nn

    class BiLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(probe_data.TOKENS_VOCABULARY, 16)
            self.lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
            self.out = nn.Linear(64, 1)

        def forward(self, x):
            _, (hidden, _) = self.lstm(self.embed(x))
            # the last layer's final states: forward (-2) and backward (-1)
            return self.out(torch.cat([hidden[-2], hidden[-1]], 1))

    return BiLSTM()


def bilstm(ctx, torch, epochs):
    """An embedding, a 2-layer bidirectional LSTM, a linear layer: the token sentiment task."""
    return _run(ctx, torch, "torch.bilstm", "bilstm", probe_data.tokens(ctx.seed), _bilstm_model,
                epochs, 0.01, binary=True, integer_inputs=True)


def _dense_model(torch):
    nn = torch.nn
    features = probe_data.TABULAR_FEATURES
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 1))


def dense(ctx, torch, epochs):
    """Two hidden ReLU layers on the imbalanced tabular set."""
    return _run(ctx, torch, "torch.dense", "dense", probe_data.tabular(ctx.seed), _dense_model,
                epochs, 0.01, binary=True)


MODELS = {"torch.cnn": (cnn, 3), "torch.bilstm": (bilstm, 3), "torch.dense": (dense, 10)}
