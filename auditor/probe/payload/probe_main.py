"""The payload's main program: read the config, switch the frameworks' determinism on, run the
kernels and models, describe the environment, print one JSON document (docs/probe.md).

Exit codes: 0 with the JSON (a failed model or kernel is recorded in ``errors``), 2 when the
config argument is broken (one line on stderr), 1 when the payload itself crashed. Anything the
frameworks print goes to stderr: file descriptor 1 is pointed at stderr until the JSON is written.
"""

import importlib
import json
import os
import sys
import traceback

import probe_env
import probe_jax
import probe_numpy
import probe_tf
import probe_torch
from probe_util import FrameworkMissing, json_safe, log, now, one_line

SCHEMA = "auditor-probe-payload/1"
PAYLOAD_VERSION = "1"
MAX_REPEATS = 100
MAX_EPOCHS = 1000

#: (framework, module to import, the payload's module for it), in the order they run
FRAMEWORKS = (
    ("numpy", "numpy", probe_numpy),
    ("torch", "torch", probe_torch),
    ("tensorflow", "tensorflow", probe_tf),
    ("jax", "jax", probe_jax),
)
HANDLERS = dict((name, handler) for name, _, handler in FRAMEWORKS)
MODELS = []
for _name, _module, _handler in FRAMEWORKS:
    MODELS.extend(_handler.MODELS)
DEFAULTS = {"seed": 0, "device": "cpu", "threads": None, "deterministic": True, "repeats": 1,
            "models": None, "kernels": True, "epochs": None}


class ConfigError(ValueError):
    """The CONFIG_JSON argument is unusable."""


def _integer(config, key, low, high, optional):
    value = config.get(key, DEFAULTS[key])
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        wanted = f"an integer from {low} to {high}" + (" or null" if optional else "")
        raise ConfigError(f"{key} must be {wanted}, not {json.dumps(value)}")
    return value


def _boolean(config, key):
    value = config.get(key, DEFAULTS[key])
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {json.dumps(value)}")
    return value


def parse_config(argv):
    """The config as applied (defaults filled in), from the one CONFIG_JSON argument."""
    if len(argv) != 1:
        raise ConfigError(f"expected one argument, CONFIG_JSON (got {len(argv)})")
    try:
        config = json.loads(argv[0])
    except ValueError as error:
        raise ConfigError(f"CONFIG_JSON is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError("CONFIG_JSON must be a JSON object")
    applied = {
        "seed": _integer(config, "seed", 0, (1 << 32) - 1, False),
        "device": config.get("device", DEFAULTS["device"]),
        "threads": _integer(config, "threads", 1, 4096, True),
        "deterministic": _boolean(config, "deterministic"),
        "repeats": _integer(config, "repeats", 1, MAX_REPEATS, False),
        "models": config.get("models", DEFAULTS["models"]),
        "kernels": _boolean(config, "kernels"),
        "epochs": _integer(config, "epochs", 1, MAX_EPOCHS, True),
    }
    if applied["device"] not in ("cpu", "gpu"):
        raise ConfigError("device must be \"cpu\" or \"gpu\", not {}".format(json.dumps(applied["device"])))
    models = applied["models"]
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError("models must be null or a list of model names")
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            raise ConfigError("unknown model {} (known: {})".format(", ".join(unknown), ", ".join(MODELS)))
        applied["models"] = list(dict.fromkeys(models))  # once each, in the order given
    ignored = sorted(set(config) - set(DEFAULTS))
    if ignored:
        applied["ignored"] = ignored
    return applied


class Context:
    """The config, the environment variables the payload set itself, notes from the setup."""

    def __init__(self, config):
        self.config = config
        self.seed = config["seed"]
        self.device = config["device"]
        self.threads = config["threads"]
        self.deterministic = config["deterministic"]
        self.payload_env = {}
        self.notes = {}
        self.errors = []

    def set_env(self, name, value):
        os.environ[name] = value
        self.payload_env[name] = value

    def set_env_default(self, name, value):
        if name not in os.environ:
            self.set_env(name, value)

    def error(self, where, error, repeat=None):
        entry = {"where": where, "error": one_line(error)}
        if repeat is not None:
            entry["repeat"] = repeat
        self.errors.append(entry)
        log("{} failed: {}".format(where, entry["error"]))
        if not isinstance(error, FrameworkMissing):
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            sys.stderr.write(detail[-3000:])


def _installed(module):
    try:
        from importlib.util import find_spec
        return find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def import_frameworks(ctx):
    """``{framework: module}`` of those importable; failures are recorded as errors."""
    present = [(name, module, handler) for name, module, handler in FRAMEWORKS if _installed(module)]
    for _, _, handler in present:
        hook = getattr(handler, "before_import", None)
        if hook is not None:
            hook(ctx)
    imported, failed = {}, {}
    for name, module, handler in present:
        log("importing " + module)
        started = now()
        try:
            framework = importlib.import_module(module)
        except BaseException as error:  # an extension module can raise SystemExit
            if isinstance(error, KeyboardInterrupt):
                raise
            failed[name] = one_line(error)
            ctx.error("import." + name, error)
            continue
        ctx.notes.setdefault(name, {})["import_seconds"] = round(now() - started, 3)
        setup = getattr(handler, "setup", None)
        if setup is not None:
            try:
                ctx.notes[name].update(setup(ctx, framework) or {})
            except Exception as error:
                ctx.error("setup." + name, error)
        imported[name] = framework
    return imported, failed


def selected_models(ctx, imported, failed):
    requested = ctx.config["models"]
    if requested is None:
        return [m for m in MODELS if m.split(".", 1)[0] in imported]
    runnable = []
    for model in requested:
        framework = model.split(".", 1)[0]
        if framework in imported:
            runnable.append(model)
        elif framework in failed:
            reason = f"{framework} could not be imported: {failed[framework]}"
            ctx.error(model, FrameworkMissing(reason))
        else:
            ctx.error(model, FrameworkMissing(f"{framework} is not installed"))
    return runnable


def run_kernels(ctx, imported, repeat):
    results = []
    for name, _, handler in FRAMEWORKS:
        if name not in imported:
            continue
        framework = imported[name]
        try:
            thunks = list(handler.kernels(ctx, framework))
        except Exception as error:
            ctx.error(name + ".kernels", error, repeat)
            continue
        for kernel, dtype, thunk in thunks:
            started = now()
            try:
                entry = handler.kernel_entry(kernel, dtype, thunk(), framework)
            except Exception as error:
                ctx.error(f"{kernel}[{dtype}]", error, repeat)
                continue
            entry["seconds"] = now() - started
            entry["repeat"] = repeat
            results.append(entry)
    return results


def run_models(ctx, imported, models, repeat):
    results = []
    for model in models:
        framework = model.split(".", 1)[0]
        handler = HANDLERS[framework]
        function, default_epochs = handler.MODELS[model]
        epochs = ctx.config["epochs"] or default_epochs
        log(f"training {model} ({epochs} epochs, repeat {repeat})")
        started = now()
        try:
            result = function(ctx, imported[framework], epochs)
        except Exception as error:
            ctx.error(model, error, repeat)
            continue
        result["seconds"] = now() - started
        result["repeat"] = repeat
        results.append(result)
        log("{}: accuracy {:.4f} in {:.2f} s".format(model, result["accuracy"], result["seconds"]))
    return results


def _safely(ctx, where, function, default, *args):
    try:
        return function(*args)
    except Exception as error:
        ctx.error(where, error)
        return default


def environment(ctx, environ, imported, failed):
    frameworks = {}
    for name, _, handler in FRAMEWORKS:
        if name in failed:
            frameworks[name] = {"error": failed[name]}
        elif name in imported:
            if name == "numpy":
                frameworks[name] = _safely(ctx, "environment.numpy", probe_env.numpy_info, {},
                                           imported[name])
            else:
                frameworks[name] = _safely(ctx, "environment." + name, handler.info, {}, ctx,
                                           imported[name])
    gpus = []
    if ctx.device == "gpu":
        for name in ("torch", "tensorflow", "jax"):
            if name in imported:
                gpus = _safely(ctx, "environment.gpus", HANDLERS[name].gpus, [], imported[name])
                if gpus:
                    break
        driver = probe_env.nvidia_driver()
        for gpu in gpus:
            gpu.setdefault("driver", driver)
    maps = _safely(ctx, "environment.maps", probe_env.shared_objects, [])
    blas = _safely(ctx, "environment.blas", probe_env.blas_runtime, [], maps)
    return {
        "python": probe_env.python_info(),
        "platform": _safely(ctx, "environment.platform", probe_env.platform_info, {}),
        "cpu": _safely(ctx, "environment.cpu", probe_env.cpu_info, {}),
        "threads": probe_env.threads_info(environ, frameworks, blas),
        "env": probe_env.filtered_env(environ),
        "frameworks": frameworks,
        "gpus": gpus,
        "maps": maps,
        "network": _safely(ctx, "environment.network", probe_env.network_info,
                           {"interfaces": [], "up": [], "has_network": False, "source": None}),
    }


def _stdout_to_stderr():
    """Point fd 1 (and sys.stdout) at stderr; returns a file for the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(saved, "w")


def main(argv):
    started = now()
    try:
        config = parse_config(argv)
    except ConfigError as error:
        sys.stderr.write("auditor probe: bad config: {}\n".format(" ".join(str(error).split())))
        return 2
    environ = dict(os.environ)  # as the image and the runner set it, before the payload's own
    try:
        output = _stdout_to_stderr()
    except (OSError, ValueError):
        output = sys.stdout
    try:
        ctx = Context(config)
        imported, failed = import_frameworks(ctx)
        models = selected_models(ctx, imported, failed)
        kernels, results = [], []
        for repeat in range(config["repeats"]):
            if config["kernels"]:
                kernels.extend(run_kernels(ctx, imported, repeat))
            results.extend(run_models(ctx, imported, models, repeat))
        applied = dict(config)
        applied["models"] = models
        applied["payload_env"] = dict(sorted(ctx.payload_env.items()))
        document = {
            "schema": SCHEMA,
            "payload_version": PAYLOAD_VERSION,
            "config": applied,
            "environment": environment(ctx, environ, imported, failed),
            "kernels": kernels,
            "models": results,
            "errors": ctx.errors,
            "seconds": now() - started,
        }
        text = json.dumps(json_safe(document), allow_nan=False)
    except Exception as error:
        sys.stderr.write(traceback.format_exc())
        sys.stderr.write(f"auditor probe: the payload crashed: {one_line(error)}\n")
        return 1
    output.write(text + "\n")
    output.flush()
    return 0
