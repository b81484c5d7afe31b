"""The recipe's files, each written by a generator of lines from a :class:`LockPlan`, so that
``--dry-run`` prints exactly what would be written: ``Dockerfile.lock``, ``requirements.lock``
(pip's hash-checking format), ``apt.lock`` (or ``apk.lock``/``rpm.lock``) and ``lock.json``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from auditor import __version__
from auditor.errors import InputError
from auditor.lock.model import LockPlan, Pin

SCHEMA_ID = "https://auditor.invalid/schemas/lock.schema.json"
LOCK_DIR = "/auditor-lock"
APT_LIST = "/etc/apt/auditor-lock.list"
APT = f"apt-get -o Dir::Etc::SourceList={APT_LIST} -o Dir::Etc::SourceParts=-"
OS_LOCK_FILES = {"deb": "apt.lock", "apk": "apk.lock", "rpm": "rpm.lock"}


def recipe_files(plan: LockPlan, lock_date: str) -> dict[str, Callable[[], Iterator[str]]]:
    """File name -> a generator of its lines, for the files this plan needs."""
    files: dict[str, Callable[[], Iterator[str]]] = {
        "Dockerfile.lock": lambda: dockerfile_lines(plan, lock_date)}
    if plan.python_packages:
        files["requirements.lock"] = lambda: requirements_lines(plan, lock_date)
    for kind in sorted({p.kind for p in plan.os_packages}):
        files[OS_LOCK_FILES[kind]] = lambda kind=kind: os_lock_lines(plan, kind, lock_date)
    files["lock.json"] = lambda: iter(json.dumps(lock_document(plan, lock_date), indent=2).splitlines())
    return files


def _header(plan: LockPlan, name: str, lock_date: str) -> str:
    source = plan.source
    at = f"@{source['digest']}" if source.get("digest") else ""
    return f"# {name}: written by auditor {__version__} on {lock_date} from {source['reference']}{at}"


def _quote(value: str) -> str:
    """A Dockerfile ENV/LABEL value: double-quoted, ``$`` kept literal."""
    return json.dumps(value).replace("$", "\\$")


def _shell_word(text: str) -> str:
    if "'" in text or "\n" in text:
        raise InputError(f"cannot write {text!r} into the recipe (a quote or newline)")
    return f"'{text}'"


def dockerfile_lines(plan: LockPlan, lock_date: str) -> Iterator[str]:
    yield _header(plan, "Dockerfile.lock", lock_date)
    yield "# Rebuild: podman build -f Dockerfile.lock .  (or: auditor lock --verify THIS_DIRECTORY)"
    for note in plan.notes:
        yield f"# {note}"
    yield f"# base: {plan.base.how}"
    yield f"FROM {plan.base.name}@{plan.base.digest}"
    installed = [p for p in plan.os_packages if _installed(plan, p)]
    for kind in ("deb", "apk", "rpm"):
        pins = [p for p in installed if p.kind == kind]
        if pins:
            yield ""
            yield from _os_install(plan, kind, pins)
    python = [p for p in plan.python_packages if _installed(plan, p)]
    if python:
        yield ""
        yield f"# Python packages: requirements.lock ({len(python)}, exact versions with hashes)"
        for pin in python:
            if pin.fix:
                yield f"# {pin.name}=={pin.version}: --fix for {pin.fix}"
        yield f"COPY requirements.lock {LOCK_DIR}/requirements.lock"
        yield ("RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps "
               f"--require-hashes -r {LOCK_DIR}/requirements.lock")
    if plan.env:
        yield ""
        for setting in plan.env:
            yield f"# {setting.why}"
            yield f"ENV {setting.name}={_quote(setting.value)}"
    if plan.labels:
        yield ""
        yield "LABEL " + " \\\n      ".join(f"{_quote(s.name)}={_quote(s.value)}" for s in plan.labels)
    for key, instruction in (("User", "USER"), ("WorkingDir", "WORKDIR")):
        if plan.config.get(key):
            yield f"{instruction} {plan.config[key]}"
    for key, instruction in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
        if plan.config.get(key):
            yield f"{instruction} {json.dumps(plan.config[key])}"


def _installed(plan: LockPlan, pin: Pin) -> bool:
    """Reinstalled by the recipe: everything on top of a proved base; only --fix's changes on
    top of the image itself."""
    return plan.base.proved or pin.fix is not None


def _os_install(plan: LockPlan, kind: str, pins: list[Pin]) -> Iterator[str]:
    yield f"# OS packages added on top of the base: {OS_LOCK_FILES[kind]} ({len(pins)}, exact versions)"
    for pin in pins:
        if pin.fix:
            yield f"# {pin.name}={pin.version}: --fix for {pin.fix}"
    if kind == "deb":
        if not plan.sources.apt:
            raise InputError("no apt source to install the OS packages from: give --apt-source")
        lines = " ".join(_shell_word(line) for line in plan.sources.apt)
        yield "RUN set -eu; \\"
        yield f"    printf '%s\\n' {lines} > {APT_LIST}; \\"
        yield f"    {APT} update; \\"
        yield (f"    DEBIAN_FRONTEND=noninteractive {APT} install -y --no-install-recommends "
               "--allow-downgrades \\")
        for pin in pins:
            yield f"        {pin.name}={pin.version} \\"
        yield "        ; \\"
        yield f"    apt-mark hold {' '.join(p.name for p in pins)} >/dev/null; \\"
        yield f"    rm -f {APT_LIST}; rm -rf /var/lib/apt/lists/*"
    elif kind == "apk":
        yield "RUN apk add --no-cache " + " ".join(f"{p.name}={p.version}" for p in pins)
    else:
        yield "RUN dnf install -y " + " ".join(f"{p.name}-{p.version}" for p in pins) + " && dnf clean all"


def requirements_lines(plan: LockPlan, lock_date: str) -> Iterator[str]:
    yield _header(plan, "requirements.lock", lock_date)
    yield "# pip install --no-deps --require-hashes -r requirements.lock"
    yield f"--index-url {plan.sources.index_url}"
    for url in plan.sources.extra_index_urls:
        yield f"--extra-index-url {url}"
    for pin in plan.python_packages:
        if not _installed(plan, pin):
            yield f"# {pin.name}=={pin.version}  (in the image, which is the base: not reinstalled)"
            continue
        if pin.fix:
            yield f"# {pin.name}=={pin.version}: --fix for {pin.fix}"
        yield f"{pin.name}=={pin.version} \\" if pin.hashes else f"{pin.name}=={pin.version}"
        for i, digest in enumerate(pin.hashes):
            end = " \\" if i < len(pin.hashes) - 1 else ""
            yield f"    --hash={digest}{end}"


def os_lock_lines(plan: LockPlan, kind: str, lock_date: str) -> Iterator[str]:
    """``[sources]``, then ``[install]`` (what the recipe installs) and ``[recorded]`` (what the
    image holds that its base already brings), one ``name=version`` per line."""
    yield _header(plan, OS_LOCK_FILES[kind], lock_date)
    if kind == "deb":
        yield "[sources]"
        yield from plan.sources.apt
    pins = [p for p in plan.os_packages if p.kind == kind]
    for section, chosen in (("install", True), ("recorded", False)):
        rows = [p for p in pins if _installed(plan, p) == chosen]
        if rows:
            yield f"[{section}]"
            for pin in rows:
                why = f"  # --fix for {pin.fix}" if pin.fix else ""
                yield f"{pin.name}={pin.version}{why}"


def lock_document(plan: LockPlan, lock_date: str) -> dict[str, Any]:
    """``lock.json``: every pin with its evidence (schema ``auditor/schemas/lock.schema.json``)."""
    def pin(p: Pin) -> dict[str, Any]:
        row = {k: v for k, v in asdict(p).items() if v not in (None, ())}
        row["hashes"] = list(p.hashes)
        row["installed"] = _installed(plan, p)
        return row

    return {
        "schema": SCHEMA_ID, "schema_version": "1", "auditor_version": __version__, "date": lock_date,
        "source": plan.source, "os": plan.os, "base": asdict(plan.base),
        "sources": {"apt": list(plan.sources.apt), "snapshot": plan.sources.snapshot,
                    "index_url": plan.sources.index_url,
                    "extra_index_urls": list(plan.sources.extra_index_urls)},
        "os_packages": [pin(p) for p in plan.os_packages],
        "python_packages": [pin(p) for p in plan.python_packages],
        "env": [asdict(s) for s in plan.env], "labels": [asdict(s) for s in plan.labels],
        "config": plan.config,
        "unlockable": [asdict(u) for u in plan.unlockable],
        "changes": [asdict(c) for c in plan.changes],
        "notes": plan.notes,
    }
