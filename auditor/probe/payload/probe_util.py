"""Helpers shared by the payload's modules: errors, digests, a portable random stream, evaluation.

Standard library only, Python 3.6+. Everything here is deterministic: the random stream uses only
``random.Random(int).random()`` (the same Mersenne Twister sequence on every CPython 3), and the
permutations and evaluations are written out here rather than taken from library functions whose
algorithm could change between versions.
"""

import binascii
import hashlib
import math
import random
import struct
import sys
import time

ERROR_CHARS = 500


class ProbeError(Exception):
    """A model or kernel cannot run here (no GPU visible, a framework too old); one line."""


class FrameworkMissing(ProbeError):
    """The framework is not installed in the image."""


def one_line(error):
    """``Type: message`` on one line, at most ERROR_CHARS characters."""
    if isinstance(error, ProbeError):
        text = str(error)
    else:
        message = str(error)
        text = type(error).__name__ + (": " + message if message else "")
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 3] + "..."


def log(message):
    """A diagnostic line on stderr (the runner shows the last lines when a run dies)."""
    try:
        sys.stderr.write("auditor-probe: " + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def now():
    return time.perf_counter()


# -- digests ----------------------------------------------------------------------------------

def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Digest:
    """sha256 over several byte strings, in the order given."""

    def __init__(self):
        self._hash = hashlib.sha256()

    def update(self, data):
        self._hash.update(data)

    def floats32(self, values):
        self._hash.update(pack_float32(values))

    def hexdigest(self):
        return "sha256:" + self._hash.hexdigest()


def pack_float32(values):
    """Little-endian float32 bytes of a sequence of Python floats."""
    values = list(values)
    return struct.pack(f"<{len(values)}f", *values)


def pack_int32(values):
    values = list(values)
    return struct.pack(f"<{len(values)}i", *values)


def exact_sum(values):
    """The exact sum of the values, rounded once (independent of the summation order)."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):  # infinities of both signs, or an overflow
        return float("nan")


def kernel_record(name, dtype, shape, data, values):
    """A ``kernels`` entry: the digest of the output's little-endian bytes in its own dtype."""
    return {"name": name, "framework": name.split(".", 1)[0], "dtype": dtype,
            "shape": [int(side) for side in shape], "digest": sha256_bytes(data),
            "sum": real(exact_sum(values))}


def kernel_from_values(name, dtype, shape, values):
    """A ``kernels`` entry from the output's values as a flat list of Python floats."""
    code = {"float32": "f", "float64": "d"}[dtype]
    values = list(values)
    return kernel_record(name, dtype, shape, struct.pack(f"<{len(values)}{code}", *values),
                         values)


# -- JSON -------------------------------------------------------------------------------------

def real(value):
    """A float for the JSON: ``repr`` precision; NaN and infinities as strings (JSON has none)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def json_safe(value, depth=0):
    """A value made of JSON types only (framework objects become strings)."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return real(value)
    if isinstance(value, dict):
        return dict((str(k), json_safe(v, depth + 1)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v, depth + 1) for v in items]
    return str(value)


def truncate(text, limit):
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "\n...[truncated]"


# -- a portable random stream -----------------------------------------------------------------

def stream_seed(seed, name):
    """An integer seed for the named stream: the config's seed and a CRC of the name."""
    return seed * (1 << 32) + (binascii.crc32(name.encode("utf-8")) & 0xFFFFFFFF)


class Stream:
    """Uniform doubles in [0, 1) from ``random.Random``, and what is built on them only."""

    def __init__(self, seed, name):
        self._random = random.Random(stream_seed(seed, name)).random

    def uniform(self, low=0.0, high=1.0):
        return low + (high - low) * self._random()

    def uniforms(self, count, low=-1.0, high=1.0):
        draw = self._random
        span = high - low
        return [low + span * draw() for _ in range(count)]

    def below(self, count):
        """An integer in [0, count)."""
        value = int(self._random() * count)
        return value if value < count else count - 1

    def normalish(self):
        """Mean 0, variance 1: the sum of three uniforms, scaled (no libm involved)."""
        draw = self._random
        return (draw() + draw() + draw() - 1.5) * 2.0

    def permutation(self, count):
        """Fisher-Yates on ``range(count)`` driven by ``below``."""
        order = list(range(count))
        for i in range(count - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order


def batches(order, size):
    """Consecutive slices of ``order`` (the last one may be shorter)."""
    return [order[i:i + size] for i in range(0, len(order), size)]


def epoch_orders(seed, name, epochs, count):
    """The sample order of every epoch: the same for every framework given the seed."""
    stream = Stream(seed, "shuffle:" + name)
    return [stream.permutation(count) for _ in range(epochs)]


# -- evaluation in plain Python (the same formula for every framework) ------------------------

def _softplus_minus(z, y):
    """Binary cross-entropy with logits for one sample: softplus(z) - y * z, stably."""
    return max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))


def evaluate_binary(logits, labels):
    """(loss, accuracy, predictions) of binary logits (> 0 means class 1)."""
    logits = [float(z) for z in logits]
    if len(logits) != len(labels):
        raise ProbeError(f"{len(logits)} outputs for {len(labels)} labels")
    losses = [_softplus_minus(z, float(y)) for z, y in zip(logits, labels)]
    predictions = [1 if z > 0.0 else 0 for z in logits]
    correct = sum(1 for p, y in zip(predictions, labels) if p == y)
    return math.fsum(losses) / len(labels), correct / float(len(labels)), predictions


def evaluate_multiclass(rows, labels):
    """(loss, accuracy, predictions) of rows of class logits (first maximum wins)."""
    losses, predictions = [], []
    for row, label in zip(rows, labels):
        row = [float(v) for v in row]
        top = max(row)
        if math.isnan(top) or math.isinf(top):
            losses.append(float("nan"))
            predictions.append(0)
            continue
        lse = top + math.log(math.fsum(math.exp(v - top) for v in row))
        losses.append(lse - row[label])
        predictions.append(row.index(top))
    if len(predictions) != len(labels):
        raise ProbeError(f"{len(predictions)} outputs for {len(labels)} labels")
    correct = sum(1 for p, y in zip(predictions, labels) if p == y)
    return math.fsum(losses) / len(labels), correct / float(len(labels)), predictions


def chance(labels):
    """The accuracy of always answering the most common label."""
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / float(len(labels)) if labels else 0.0


def epoch_record(losses, correct, count):
    """One entry of a model's ``epochs``: the mean training loss and accuracy of that epoch."""
    loss = math.fsum(losses) / len(losses) if losses else float("nan")
    return {"loss": real(loss), "accuracy": correct / float(count) if count else 0.0}


def model_result(name, kind, loss, accuracy, predictions, labels, weights_digest, outputs_digest,
                 epochs, parameters, samples, device):
    framework = name.split(".", 1)[0]
    return {
        "name": name, "framework": framework, "kind": kind,
        "accuracy": accuracy, "loss": real(loss), "chance": chance(labels),
        "weights_digest": weights_digest,
        "predictions_digest": sha256_bytes(pack_int32(predictions)),
        "outputs_digest": outputs_digest,
        "epochs": epochs, "parameters": parameters,
        "samples": {"train": samples[0], "test": samples[1]},
        "device": device,
    }
