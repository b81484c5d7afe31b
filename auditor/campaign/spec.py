"""A campaign file (YAML, schema ``auditor/schemas/campaign.schema.json``) and the jobs it
expands to: one per target x image (the probe's own repeats and variations run inside a job),
or one per image for a fleet audit."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from auditor.errors import InputError
from auditor.rules.yamlsource import Document, YamlProblem

JOB_SCHEMA = "auditor-campaign-job/1"


@functools.cache
def campaign_schema() -> dict[str, Any]:
    return json.loads(resources.files("auditor.schemas").joinpath("campaign.schema.json").read_text())


@dataclass(frozen=True)
class Target:
    name: str
    gpu: bool = False
    constraint: str | None = None
    gres: str | None = None
    partition: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Campaign:
    name: str
    images: tuple[tuple[str, str], ...]  # (name, reference)
    targets: tuple[Target, ...]
    probe: dict[str, Any] = field(default_factory=dict, hash=False)
    backend: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Job:
    """One unit of work on one node: ``kind`` probe (an image on a target) or audit."""

    job_id: str
    kind: str
    target: Target
    image: tuple[str, str]  # (name, reference)
    args: tuple[str, ...]  # the auditor sub-command's arguments (after `auditor`)

    def spec(self) -> dict[str, Any]:
        """``jobs/<id>/spec.json``: what `auditor campaign job` runs."""
        return {"schema": JOB_SCHEMA, "job_id": self.job_id, "kind": self.kind, "target": self.target.name,
                "image": {"name": self.image[0], "reference": self.image[1]}, "args": list(self.args)}


def parse_campaign(text: str, where: str) -> Campaign:
    """The campaign in ``text`` (the file ``where``); InputError naming the line on a problem."""
    try:
        doc = Document(text)
    except YamlProblem as problem:
        raise InputError(f"{where}:{problem.line or 1}: {problem.message}") from None
    errors = doc.schema_errors(campaign_schema())
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{where}:{first.line or 1}: {first.message}{more}")
    data = doc.data
    for key in ("images", "targets"):
        names = [item["name"] for item in data[key]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"{where}:{doc.line([key])}: {key} named twice: {', '.join(twice)}")
    targets = tuple(Target(t["name"], t.get("gpu", False), t.get("constraint"), t.get("gres"),
                           t.get("partition"), dict(t.get("node_selector") or {})) for t in data["targets"])
    return Campaign(data["name"], tuple((i["name"], i["reference"]) for i in data["images"]), targets,
                    dict(data.get("probe") or {}), dict(data.get("backend") or {}))


def probe_jobs(campaign: Campaign) -> list[Job]:
    """One probe job per target x image; the report goes to the job's folder."""
    probe = campaign.probe
    args = ["--repeats", str(probe.get("repeats", 3)), "--seed", str(probe.get("seed", 0)),
            "--timeout", str(probe.get("timeout", 600))]
    for vary in probe.get("vary") or []:
        args += ["--vary", vary]
    if probe.get("models"):
        args += ["--models", ",".join(probe["models"])]
    if not probe.get("crosscheck", False):
        args.append("--no-crosscheck")
    jobs = []
    for target in campaign.targets:
        for name, reference in campaign.images:
            extra = ["--gpu"] if target.gpu else []
            jobs.append(Job(_job_id(target.name, name), "probe", target, (name, reference),
                            ("probe", reference, *args, *extra)))
    return jobs


def audit_jobs(images: list[tuple[str, str]], target: Target = Target("fleet"),
               extra_args: tuple[str, ...] = ()) -> list[Job]:
    """One audit job per image (a fleet audit); ``extra_args`` go to every `auditor audit`."""
    return [Job(_job_id(target.name, name), "audit", target, (name, reference),
                ("audit", reference, *extra_args)) for name, reference in images]


def _job_id(target: str, image: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{target}--{image}")
