"""Synthetic data sets and kernel inputs, generated in plain Python from the seed.

Every framework trains on exactly the same numbers (Python floats, rounded to float32 by the
framework), so results can be compared between frameworks and between images. Nothing is
downloaded. The sets are small on purpose: each model trains in seconds on one CPU.
"""

from probe_util import Stream

TABULAR_FEATURES = 16
TABULAR_TRAIN, TABULAR_TEST = 1024, 512
TABULAR_POSITIVE = 0.15  # the share of the rare class

TOKENS_LENGTH = 16
TOKENS_VOCABULARY = 24
TOKENS_GOOD = (1, 2, 3)
TOKENS_BAD = (4, 5, 6)
TOKENS_NEUTRAL_FIRST = 7
TOKENS_TRAIN, TOKENS_TEST = 1024, 512

DIGITS_SIDE = 28
DIGITS_CLASSES = 10
DIGITS_TRAIN, DIGITS_TEST = 1024, 256

_CACHE = {}


class Dataset:
    """``x``: flat list of features (row-major, ``shape`` per sample), ``y``: int labels."""

    def __init__(self, name, x, y, shape, train):
        self.name = name
        self.x = x
        self.y = y
        self.shape = tuple(shape)
        self.train = train
        self.count = len(y)

    @property
    def width(self):
        width = 1
        for side in self.shape:
            width *= side
        return width

    @property
    def test(self):
        return self.count - self.train

    def split_x(self):
        cut = self.train * self.width
        return self.x[:cut], self.x[cut:]

    def split_y(self):
        return self.y[:self.train], self.y[self.train:]


def _cached(key, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def tabular(seed):
    """Imbalanced binary classification: 16 features, about 15 % positives; the label is a
    fixed linear rule plus two nonlinear terms, thresholded at the 85th percentile."""
    return _cached(("tabular", seed), lambda: _tabular(seed))


def _tabular(seed):
    stream = Stream(seed, "tabular")
    weights = stream.uniforms(TABULAR_FEATURES)
    count = TABULAR_TRAIN + TABULAR_TEST
    x, scores = [], []
    for _ in range(count):
        row = [stream.normalish() for _ in range(TABULAR_FEATURES)]
        score = sum(w * v for w, v in zip(weights, row)) + 0.8 * row[0] * row[1] - 0.5 * row[2] * row[2]
        x.extend(row)
        scores.append(score)
    threshold = sorted(scores)[int(count * (1.0 - TABULAR_POSITIVE))]
    y = [1 if score > threshold else 0 for score in scores]
    return Dataset("tabular", x, y, (TABULAR_FEATURES,), TABULAR_TRAIN)


def tokens(seed):
    """Token sequences with a sentiment rule: label 1 when "good" tokens (1-3) outnumber "bad"
    ones (4-6); the other tokens (7-23) are neutral. ``x`` holds ints."""
    return _cached(("tokens", seed), lambda: _tokens(seed))


def _tokens(seed):
    stream = Stream(seed, "tokens")
    count = TOKENS_TRAIN + TOKENS_TEST
    neutral = TOKENS_VOCABULARY - TOKENS_NEUTRAL_FIRST
    x, y = [], []
    for _ in range(count):
        good = bad = 0
        for _ in range(TOKENS_LENGTH):
            kind = stream.uniform()
            if kind < 0.13:
                x.append(TOKENS_GOOD[stream.below(len(TOKENS_GOOD))])
                good += 1
            elif kind < 0.26:
                x.append(TOKENS_BAD[stream.below(len(TOKENS_BAD))])
                bad += 1
            else:
                x.append(TOKENS_NEUTRAL_FIRST + stream.below(neutral))
        y.append(1 if good > bad else 0)
    return Dataset("tokens", x, y, (TOKENS_LENGTH,), TOKENS_TRAIN)


# A seven-segment layout of the ten digits, drawn as 2-pixel strokes in a 28 x 28 image.
_SEGMENTS = {
    "a": (9, 5, 19, 7), "b": (17, 5, 19, 14), "c": (17, 13, 19, 23), "d": (9, 21, 19, 23),
    "e": (9, 13, 11, 23), "f": (9, 5, 11, 14), "g": (9, 13, 19, 15),
}
_DIGIT_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc",
                   "abcdefg", "abcdfg")


def _templates():
    templates = []
    for segments in _DIGIT_SEGMENTS:
        pixels = set()
        for name in segments:
            x0, y0, x1, y1 = _SEGMENTS[name]
            for row in range(y0, y1):
                for column in range(x0, x1):
                    pixels.add((row, column))
        templates.append(sorted(pixels))
    return templates


def digits(seed):
    """Digit-like 28 x 28 images, one channel: a class's seven-segment strokes, shifted by up to
    3 pixels, with a random stroke intensity, a slanted stroke's offset and uniform noise."""
    return _cached(("digits", seed), lambda: _digits(seed))


def _digits(seed):
    stream = Stream(seed, "digits")
    templates = _templates()
    side = DIGITS_SIDE
    count = DIGITS_TRAIN + DIGITS_TEST
    x, y = [], []
    for _ in range(count):
        label = stream.below(DIGITS_CLASSES)
        image = stream.uniforms(side * side, -0.2, 0.2)
        dx, dy = stream.below(7) - 3, stream.below(7) - 3
        slant = stream.uniform(-0.15, 0.15)
        strength = stream.uniform(0.6, 1.0)
        for row, column in templates[label]:
            shifted = column + dx + round(slant * (14 - row))
            r, c = row + dy, min(max(shifted, 0), side - 1)
            image[r * side + c] += strength
        x.extend(image)
        y.append(label)
    return Dataset("digits", x, y, (1, side, side), DIGITS_TRAIN)


# -- kernel inputs ----------------------------------------------------------------------------

MATMUL_SIDE = 256
SUM_LENGTH = 1 << 20
CONV_INPUT = (8, 3, 32, 32)  # N, C, H, W
CONV_WEIGHT = (16, 3, 3, 3)  # K, C, R, S


def kernel_inputs(seed):
    """``{"matmul": (a, b), "sum": v, "conv": (x, w)}``: flat lists of uniforms in [-1, 1)."""
    return _cached(("kernels", seed), lambda: _kernel_inputs(seed))


def _kernel_inputs(seed):
    stream = Stream(seed, "kernels")
    side = MATMUL_SIDE
    a = stream.uniforms(side * side)
    b = stream.uniforms(side * side)
    v = stream.uniforms(SUM_LENGTH)
    n, c, h, w = CONV_INPUT
    k, c2, r, s = CONV_WEIGHT
    x = stream.uniforms(n * c * h * w)
    weight = stream.uniforms(k * c2 * r * s)
    return {"matmul": (a, b), "sum": v, "conv": (x, weight)}
