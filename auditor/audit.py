"""The audit pipeline: reference → image → rootfs index → inventory → report document."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from auditor.inventory import Cataloger, FileView, Inventory, catalogers_for, run_catalogers
from auditor.model import Finding, Platform, Unknown
from auditor.reference import ImageRef, parse_reference
from auditor.rootfs.build import LayerProgress, build_rootfs, default_jobs
from auditor.rootfs.decompress import Limits
from auditor.rootfs.index import RootfsIndex
from auditor.rules.evaluate import Evaluation, evaluate
from auditor.rules.pack import Pack, load_packs
from auditor.rules.stack import stack_of
from auditor.sources import BlobCache, Image, SourceOptions, make_source, open_image


@dataclass(frozen=True)
class AuditOptions:
    platform: Platform | None = None
    cache_dir: str | None = None
    limits: Limits = field(default_factory=Limits)
    source: SourceOptions = field(default_factory=SourceOptions)
    env: tuple[tuple[str, str], ...] = ()  # --env: over the image config's Env
    all_elf: bool = False  # linkage of every ELF file, not only frameworks'
    gpu_arch: tuple[str, ...] = ()  # --gpu-arch: for rules that depend on the GPU
    rules: tuple[str, ...] = ()  # --rules: extra packs (paths, pinned URLs)
    builtin_rules: bool = True
    verify_diff_ids: bool = False  # --verify-diff-ids: hash each layer against the config's diff_id
    lazy: bool = False  # --lazy: zstd:chunked and eStargz layers read by their table of contents
    jobs: int = 0  # --jobs: layers read at once; 0: one per core, at most 3


@dataclass
class AuditResult:
    ref: ImageRef
    image: Image
    index: RootfsIndex
    inventory: Inventory
    facts: dict
    seconds: float
    rootfs_seconds: float = 0.0  # resolving, reading and indexing the layers
    evaluation: Evaluation | None = None  # the rule packs' verdicts

    @property
    def findings(self) -> list[Finding]:
        """The inventory's and linkage's findings, then the rules'."""
        rules = self.evaluation.findings if self.evaluation else []
        return [*self.inventory.findings, *rules]


def audit(reference: str | ImageRef, options: AuditOptions = AuditOptions(),
          progress: LayerProgress | None = None,
          catalogers: list[Cataloger] | None = None) -> AuditResult:
    """Audit one image. Raises AuditorError subclasses for anything the user should see."""
    started = time.monotonic()
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    cache = BlobCache(options.cache_dir)
    catalogers = catalogers_for(options.all_elf) if catalogers is None else catalogers
    packs = load_packs(options.rules, builtin=options.builtin_rules)  # a bad pack fails before any I/O
    source = make_source(ref, cache, options.source)
    try:
        image = open_image(source, cache, options.platform)
        wants = [want for cataloger in catalogers for want in cataloger.wants]
        index = build_rootfs(image, cache, wants, options.limits, progress, options.verify_diff_ids,
                             options.lazy, options.jobs or default_jobs())
        rootfs_done = time.monotonic()
        facts = image.facts()
    finally:
        source.close()
    view = FileView(index, cache.read_bytes, image.config, dict(options.env))
    inventory = run_catalogers(view, catalogers)
    evaluation = evaluate_rules(inventory, view, options, packs)
    return AuditResult(ref, image, index, inventory, facts, time.monotonic() - started,
                       rootfs_done - started, evaluation)


def evaluate_rules(inventory: Inventory, view: FileView, options: AuditOptions,
                   packs: list[Pack]) -> Evaluation:
    """The packs over the image's Stack; a rule that could not be evaluated for a copy whose
    version is unknown or unparsable is recorded as an unknown too."""
    stack = stack_of(inventory, view.env(), view.env_overrides, view.labels(), options.gpu_arch)
    started = time.monotonic()
    evaluation = evaluate(stack, packs)
    for result in evaluation.not_evaluable:
        for reason in result.reasons:
            inventory.unknowns.append(Unknown("rules", result.rule.id, None,
                                              f"rule not evaluable: {reason}"))
    inventory.seconds["rules"] = time.monotonic() - started
    return evaluation
