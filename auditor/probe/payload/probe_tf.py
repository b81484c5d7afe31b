"""TensorFlow / Keras (``tf.keras``): its switches (op determinism, seeds, threads), kernels and
three models: ``tensorflow.cnn``, ``tensorflow.bilstm``, ``tensorflow.dense``.

Each epoch is one ``fit`` call on the samples in the payload's own order (``shuffle=False``), so
the order is the same as PyTorch's and NumPy's.
"""

import os

import probe_data
from probe_util import (
    Digest,
    ProbeError,
    epoch_orders,
    epoch_record,
    evaluate_binary,
    evaluate_multiclass,
    kernel_from_values,
    model_result,
    real,
    sha256_bytes,
)

BATCH = 32
NO_KERAS_HOME = "/proc/self/auditor-probe-no-keras-home"  # cannot be created: Keras writes nothing


def before_import(ctx):
    ctx.set_env_default("TF_CPP_MIN_LOG_LEVEL", "2")
    if ctx.deterministic:  # older TensorFlow (before enable_op_determinism) reads this
        ctx.set_env_default("TF_DETERMINISTIC_OPS", "1")
    home_config = os.path.join(os.path.expanduser("~"), ".keras", "keras.json")
    if "KERAS_HOME" not in os.environ and not os.path.isfile(home_config):
        ctx.set_env("KERAS_HOME", NO_KERAS_HOME)


def setup(ctx, tf):
    notes = {}
    config = getattr(tf, "config", None)
    if ctx.threads is not None and config is not None:
        try:
            config.threading.set_intra_op_parallelism_threads(ctx.threads)
            config.threading.set_inter_op_parallelism_threads(ctx.threads)
        except (RuntimeError, AttributeError) as error:
            notes["threads_error"] = str(error)
    if ctx.device == "cpu" and config is not None:
        try:
            config.set_visible_devices([], "GPU")
        except (RuntimeError, AttributeError, ValueError) as error:
            notes["hide_gpus_error"] = str(error)
    if ctx.deterministic:
        experimental = getattr(config, "experimental", None)
        if experimental is not None and hasattr(experimental, "enable_op_determinism"):
            experimental.enable_op_determinism()
            notes["deterministic_call"] = "tf.config.experimental.enable_op_determinism()"
        else:
            notes["deterministic_call"] = "TF_DETERMINISTIC_OPS=1"
    seed(ctx, tf)
    return notes


def seed(ctx, tf):
    keras = tf.keras
    utils = getattr(keras, "utils", None)
    if utils is not None and hasattr(utils, "set_random_seed"):
        utils.set_random_seed(ctx.seed)  # python, numpy's global and TensorFlow's seeds
    elif hasattr(tf, "random") and hasattr(tf.random, "set_seed"):
        tf.random.set_seed(ctx.seed)
    else:
        tf.compat.v1.set_random_seed(ctx.seed)


def _call(function, default=None):
    try:
        return function()
    except Exception:
        return default


def _physical(tf, kind):
    config = tf.config
    lister = getattr(config, "list_physical_devices", None) or config.experimental.list_physical_devices
    return lister(kind)


def info(ctx, tf):
    config = getattr(tf, "config", None)
    experimental = getattr(config, "experimental", None)
    build = _call(lambda: dict(tf.sysconfig.get_build_info()), {})
    keras = _call(lambda: tf.keras)
    result = {
        "version": str(tf.__version__),
        "build_info": build,
        "cuda": build.get("cuda_version") if isinstance(build, dict) else None,
        "cudnn": build.get("cudnn_version") if isinstance(build, dict) else None,
        "deterministic": _call(lambda: bool(experimental.is_op_determinism_enabled()),
                               os.environ.get("TF_DETERMINISTIC_OPS") in ("1", "true", "True")),
        "tf32": _call(lambda: bool(experimental.tensor_float_32_execution_enabled())),
        "intra_op_threads": _call(lambda: config.threading.get_intra_op_parallelism_threads()),
        "inter_op_threads": _call(lambda: config.threading.get_inter_op_parallelism_threads()),
        "keras": _call(lambda: str(getattr(keras, "__version__", None) or keras.version())),
        "keras_backend": _call(lambda: str(keras.backend.backend())),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "gpus_visible": _call(lambda: len(_physical(tf, "GPU"))),
    }
    result.update(ctx.notes.get("tensorflow", {}))
    return result


def gpus(tf):
    found = []
    for index, dev in enumerate(_physical(tf, "GPU")):
        details = _call(lambda device=dev: tf.config.experimental.get_device_details(device), {}) or {}
        capability = details.get("compute_capability")
        found.append({"name": str(details.get("device_name") or dev.name),
                      "capability": ".".join(str(v) for v in capability) if capability else None,
                      "memory": None, "framework": "tensorflow", "index": index})
    return found


def _device(ctx, tf):
    if ctx.device == "gpu":
        if not _physical(tf, "GPU"):
            raise ProbeError("no GPU visible")
        return "/GPU:0"
    return "/CPU:0"


# -- kernels ----------------------------------------------------------------------------------

def kernel_entry(name, dtype, value, tf):
    array = value.numpy()
    return kernel_from_values(name, dtype, list(array.shape), array.ravel().tolist())


def kernels(ctx, tf):
    import numpy as np
    inputs = probe_data.kernel_inputs(ctx.seed)
    side = probe_data.MATMUL_SIDE
    a_list, b_list = inputs["matmul"]

    def on_device(function):
        def run():
            with tf.device(_device(ctx, tf)):
                return function()
        return run

    def matmul(dtype):
        def run():
            a = tf.constant(np.array(a_list, dtype=dtype).reshape(side, side))
            b = tf.constant(np.array(b_list, dtype=dtype).reshape(side, side))
            return tf.linalg.matmul(a, b)
        return on_device(run)

    yield "tensorflow.matmul", "float32", matmul(np.float32)
    yield "tensorflow.matmul", "float64", matmul(np.float64)
    vector = np.array(inputs["sum"], dtype=np.float32)
    yield "tensorflow.sum", "float32", on_device(lambda: tf.reduce_sum(tf.constant(vector)))
    yield "tensorflow.sum_reversed", "float32", on_device(
        lambda: tf.reduce_sum(tf.constant(vector[::-1].copy())))
    x_list, w_list = inputs["conv"]

    def conv():
        x = np.array(x_list, dtype=np.float32).reshape(probe_data.CONV_INPUT).transpose(0, 2, 3, 1)
        w = np.array(w_list, dtype=np.float32).reshape(probe_data.CONV_WEIGHT).transpose(2, 3, 1, 0)
        out = tf.nn.conv2d(tf.constant(x.copy()), tf.constant(w.copy()), strides=1, padding="VALID")
        return tf.transpose(out, [0, 3, 1, 2])  # NCHW, as NumPy's and PyTorch's

    yield "tensorflow.conv2d", "float32", on_device(conv)


# -- models -----------------------------------------------------------------------------------

def _weights_digest(np, model):
    digest = Digest()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight, dtype="<f4").tobytes())
    return digest.hexdigest()


def _run(ctx, tf, name, kind, data, build, epochs, rate, binary, integer_inputs=False):
    import numpy as np
    keras = tf.keras
    on = _device(ctx, tf)
    x_part, x_test_part = data.split_x()
    y_part, y_test = data.split_y()
    x_dtype = np.int32 if integer_inputs else np.float32
    shape = (-1, *data.shape)
    x_train = np.array(x_part, dtype=x_dtype).reshape(shape)
    x_test = np.array(x_test_part, dtype=x_dtype).reshape(shape)
    if len(data.shape) == 3:  # images: Keras wants channels last
        x_train = np.ascontiguousarray(x_train.transpose(0, 2, 3, 1))
        x_test = np.ascontiguousarray(x_test.transpose(0, 2, 3, 1))
    y_train = np.array(y_part, dtype=np.float32 if binary else np.int32)
    with tf.device(on):
        seed(ctx, tf)
        model = build(keras, x_train.shape[1:])
        if binary:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=loss,
                      metrics=[metric])
        history = []
        for order in epoch_orders(ctx.seed, data.name, epochs, data.train):
            fitted = model.fit(x_train[order], y_train[order], batch_size=BATCH, epochs=1,
                               shuffle=False, verbose=0)
            record = epoch_record([fitted.history["loss"][-1]], 0, data.train)
            record["accuracy"] = real(fitted.history.get("accuracy", [float("nan")])[-1])
            history.append(record)
        logits = np.asarray(model.predict(x_test, batch_size=256, verbose=0), dtype=np.float32)
    values = logits.ravel().tolist()
    if binary:
        loss_value, accuracy, predictions = evaluate_binary(values, y_test)
    else:
        loss_value, accuracy, predictions = evaluate_multiclass(logits.tolist(), y_test)
    parameters = int(sum(int(np.prod(w.shape)) for w in model.get_weights()))
    return model_result(name, kind, loss_value, accuracy, predictions, y_test,
                        _weights_digest(np, model),
                        sha256_bytes(np.ascontiguousarray(logits, dtype="<f4").tobytes()), history,
                        parameters, (data.train, data.test), on)


def _cnn_model(keras, shape):
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Conv2D(8, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(probe_data.DIGITS_CLASSES)])


def cnn(ctx, tf, epochs):
    return _run(ctx, tf, "tensorflow.cnn", "cnn", probe_data.digits(ctx.seed), _cnn_model, epochs,
                0.002, binary=False)


def _bilstm_model(keras, shape):
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=shape, dtype="int32"),
        layers.Embedding(probe_data.TOKENS_VOCABULARY, 16),
        layers.Bidirectional(layers.LSTM(32, return_sequences=True)),
        layers.Bidirectional(layers.LSTM(32)),
        layers.Dense(1)])


def bilstm(ctx, tf, epochs):
    return _run(ctx, tf, "tensorflow.bilstm", "bilstm", probe_data.tokens(ctx.seed), _bilstm_model,
                epochs, 0.01, binary=True, integer_inputs=True)


def _dense_model(keras, shape):
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Dense(32, activation="relu"), layers.Dense(32, activation="relu"), layers.Dense(1)])


def dense(ctx, tf, epochs):
    return _run(ctx, tf, "tensorflow.dense", "dense", probe_data.tabular(ctx.seed), _dense_model,
                epochs, 0.01, binary=True)


MODELS = {"tensorflow.cnn": (cnn, 3), "tensorflow.bilstm": (bilstm, 3),
          "tensorflow.dense": (dense, 10)}
