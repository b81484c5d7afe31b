"""``--format cyclonedx``: the report document as a CycloneDX 1.6 JSON BOM (cyclonedx-python-lib).

What goes where:

- ``metadata.component``: the image, a ``container`` component; its version is the image digest,
  its purl ``pkg:oci/NAME@DIGEST?repository_url=…&tag=…&arch=…`` when the digest is known.
- every package (deb, apk, rpm, python, conda): a ``library`` component, bom-ref = its purl.
- every numeric library file (cuDNN, cuBLAS, NCCL, …): a ``library`` component named by the
  component (``cudnn``), with the owning package's purl when one owns it, its evidence (the file
  as an occurrence, each reading as an identity method) and, from the linkage, who loads it
  (``auditor:loaded-by``) or which copy shadows it (``auditor:shadowed``).
- every framework: a ``framework`` component with what it was built for (``auditor:built-for:*``).
- the OS from os-release: an ``operating-system`` component.
- dependencies: the image depends on every component; a framework (or a numeric library) depends
  on each numeric library the linkage resolved for it.
- findings are not vulnerabilities: each one is an ``auditor:finding`` property (the rule id) on
  the component at its path, or on the image when no component is there.

The output is reproducible: bom-refs derive from purls and paths, the serial number from the
image digest (uuid5); only ``metadata.timestamp`` changes from one run to the next.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.exception.factory import InvalidLicenseExpressionException, InvalidSpdxLicenseException
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import (
    AnalysisTechnique,
    ComponentEvidence,
    Identity,
    IdentityField,
    Method,
    Occurrence,
)
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from auditor.errors import AuditorError
from auditor.reference import ImageRef, parse_reference, parse_registry_reference

SCHEMA_VERSION = SchemaVersion.V1_6
# uuid5 namespace of the serial numbers (a fixed, random-looking UUID: never change it)
SERIAL_NAMESPACE = uuid.UUID("5f0c2f5e-4a57-4f0e-9a1d-6a7c1b3e2d90")
TOOL_REF = "auditor"
IMAGE_REF = "image"
HEAD_KEYS = ("$schema", "bomFormat", "specVersion", "serialNumber", "version", "metadata")

# evidence kind -> (technique, confidence of a reading of that kind)
TECHNIQUES: dict[str, tuple[AnalysisTechnique, Decimal]] = {
    "constant": (AnalysisTechnique.BINARY_ANALYSIS, Decimal("0.9")),
    "data-symbol": (AnalysisTechnique.BINARY_ANALYSIS, Decimal("0.9")),
    "string": (AnalysisTechnique.BINARY_ANALYSIS, Decimal("0.8")),
    "soname": (AnalysisTechnique.BINARY_ANALYSIS, Decimal("0.5")),
    "filename": (AnalysisTechnique.FILENAME, Decimal("0.4")),
    "header": (AnalysisTechnique.MANIFEST_ANALYSIS, Decimal("0.8")),
    "package": (AnalysisTechnique.MANIFEST_ANALYSIS, Decimal("0.8")),
    "metadata": (AnalysisTechnique.MANIFEST_ANALYSIS, Decimal("0.8")),
    "env": (AnalysisTechnique.OTHER, Decimal("0.3")),
    "label": (AnalysisTechnique.OTHER, Decimal("0.3")),
}
UNKNOWN_TECHNIQUE = (AnalysisTechnique.OTHER, Decimal("0.2"))
NON_FILE_KINDS = ("package", "env", "label")  # their source is not a path in the image
_ARCHIVE_SUFFIX = re.compile(r"\.(?:tar(?:\.(?:gz|zst|xz|bz2))?|tgz|oci)$")


def render(document: dict[str, Any], context: Any = None) -> str:
    """The CycloneDX 1.6 JSON text of a report document (``context`` is not used)."""
    bom = build_bom(document)
    outputter = make_outputter(bom, OutputFormat.JSON, SCHEMA_VERSION)
    with warnings.catch_warnings():
        # the library warns when the root has no dependencies (an image with no components)
        warnings.simplefilter("ignore", UserWarning)
        data = json.loads(outputter.output_as_string())
    head = {key: data.pop(key) for key in HEAD_KEYS if key in data}  # the header first, for people
    return json.dumps({**head, **data}, indent=2) + "\n"


def build_bom(document: dict[str, Any]) -> Bom:
    bom = _Builder(document).build()
    _index_dependencies(bom)
    return bom


def _index_dependencies(bom: Bom) -> None:
    """Make the outputter's check that every component has a dependency entry linear: it calls
    ``register_dependency(component)`` once per component, and the library finds the entry by a
    scan of all of them (quadratic: seconds on an image with thousands of packages). Every
    component has its entry already, so such a call changes nothing and is skipped; any other
    call goes to the library."""
    known = {str(d.ref.value) for d in bom.dependencies}
    register = bom.register_dependency

    def register_dependency(target: Any, depends_on: Any = None) -> None:
        if depends_on is None and str(target.bom_ref.value) in known:
            return
        register(target, depends_on)

    bom.register_dependency = register_dependency  # type: ignore[method-assign]


class _Builder:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.refs: set[str] = {TOOL_REF, IMAGE_REF}
        self.packages: list[tuple[dict[str, Any], Component]] = []
        self.libraries: dict[str, Component] = {}  # numeric library path -> component
        self.frameworks: list[tuple[dict[str, Any], Component]] = []
        self.by_path: dict[str, Component] = {}  # for findings

    # -- bom-refs ------------------------------------------------------------------------------
    def _ref(self, wanted: str, disambiguator: str) -> str:
        """``wanted`` if unused, else ``wanted#disambiguator`` (then ``…#2``, ``…#3``)."""
        ref = wanted if wanted not in self.refs else f"{wanted}#{disambiguator}"
        n = 2
        while ref in self.refs:
            ref, n = f"{wanted}#{disambiguator}#{n}", n + 1
        self.refs.add(ref)
        return ref

    # -- the whole BOM -------------------------------------------------------------------------
    def build(self) -> Bom:
        doc = self.doc
        image = self._image()
        components: list[Component] = []
        os_component = self._os()
        if os_component is not None:
            components.append(os_component)
        for package in doc.get("packages") or []:
            component = self._package(package)
            self.packages.append((package, component))
            components.append(component)
        for lib in doc.get("numeric_stack") or []:
            component = self._library(lib)
            self.libraries.setdefault(_norm(lib.get("path")), component)
            self.by_path.setdefault(_norm(lib.get("path")), component)
            components.append(component)
        for fw in doc.get("frameworks") or []:
            component = self._framework(fw)
            self.frameworks.append((fw, component))
            self.by_path.setdefault(_norm(fw.get("path")), component)
            components.append(component)
        self._findings(image)

        bom = Bom(serial_number=self._serial_number())
        bom.metadata.component = image
        bom.metadata.tools = ToolRepository(components=[
            Component(type=ComponentType.APPLICATION, name="auditor", bom_ref=TOOL_REF,
                      version=str(doc.get("auditor_version") or "unknown"))])
        bom.components = components
        bom.dependencies = self._dependencies(image, components)
        return bom

    def _serial_number(self) -> uuid.UUID:
        image = self.doc.get("image") or {}
        identity = image.get("digest") or image.get("image_id") or \
            (self.doc.get("reference") or {}).get("canonical") or ""
        return uuid.uuid5(SERIAL_NAMESPACE, f"{identity}|{image.get('platform') or ''}")

    # -- the image -----------------------------------------------------------------------------
    def _image(self) -> Component:
        doc, image = self.doc, self.doc.get("image") or {}
        reference = doc.get("reference") or {}
        name, repository_url, tag = _image_name(reference, image.get("source") or {})
        digest = image.get("digest")
        purl = None
        if digest:
            qualifiers = {"repository_url": repository_url, "tag": tag,
                          "arch": _arch(image.get("platform"))}
            purl = _OciPurl(type="oci", name=name.rsplit("/", 1)[-1].lower(), version=digest,
                            qualifiers={k: v for k, v in qualifiers.items() if v})
        properties = _props(
            ("auditor:reference", reference.get("canonical")),
            ("auditor:platform", image.get("platform")),
            ("auditor:image-id", image.get("image_id")),
            ("auditor:index-digest", image.get("index_digest")),
            ("auditor:media-type", image.get("media_type")),
            ("auditor:created", image.get("created")),
        )
        # the layers the components' auditor:layer count in
        properties += _props(*((f"auditor:layer:{layer.get('index')}", layer.get("digest"))
                               for layer in doc.get("layers") or []))
        return Component(type=ComponentType.CONTAINER, name=name, bom_ref=IMAGE_REF,
                         version=digest or image.get("image_id"), purl=purl, properties=properties)

    def _os(self) -> Component | None:
        os_release = self.doc.get("os") or {}
        if not os_release.get("id"):
            return None
        return Component(type=ComponentType.OPERATING_SYSTEM, name=str(os_release["id"]),
                         version=os_release.get("version_id"),
                         description=os_release.get("pretty_name"),
                         bom_ref=self._ref(f"os:{os_release['id']}", str(os_release.get("version_id"))),
                         properties=_props(("auditor:path", os_release.get("path"))))

    # -- packages ------------------------------------------------------------------------------
    def _package(self, package: dict[str, Any]) -> Component:
        purl = _purl(package.get("purl"))
        wanted = package.get("purl") or \
            f"package:{package.get('type')}/{package.get('name')}@{package.get('version')}"
        return Component(
            type=ComponentType.LIBRARY, name=str(package.get("name")), version=package.get("version"),
            purl=purl, bom_ref=self._ref(wanted, str(package.get("path"))),
            licenses=_licenses(package.get("licenses") or []),
            properties=_props(("auditor:path", package.get("path")), ("auditor:layer", package.get("layer")),
                              ("auditor:source", package.get("source"))))

    def _owner(self, key: str | None, path: str | None) -> dict[str, Any] | None:
        """The package a library's ``type:name@version`` names; of several, the nearest path."""
        if not key:
            return None
        matches = [p for p, _ in self.packages
                   if f"{p.get('type')}:{p.get('name')}@{p.get('version')}" == key]
        return max(matches, key=lambda p: _common_prefix(str(p.get("path")), path or ""), default=None)

    # -- numeric libraries ---------------------------------------------------------------------
    def _library(self, lib: dict[str, Any]) -> Component:
        path = _norm(lib.get("path"))
        owner = self._owner(lib.get("package"), path)
        owner_purl = owner.get("purl") if owner else None
        linkage = self.doc.get("linkage") or {}
        loaded_by: list[str] = []
        shadowed_by: list[str] = []
        for winner in linkage.get("numeric") or []:
            loaded = winner.get("loaded") or {}
            if _norm(loaded.get("path")) == path:
                loaded_by.extend(winner.get("consumers") or [])
            for copy in winner.get("shadowed") or []:
                if _norm(copy.get("path")) == path:
                    shadowed_by.append(_norm(loaded.get("path")))
        properties = _props(
            ("auditor:path", path), ("auditor:layer", lib.get("layer")),
            ("auditor:soname", lib.get("soname")), ("auditor:machine", lib.get("machine")),
            ("auditor:package", owner_purl or lib.get("package")),
        )
        properties += [Property(name="auditor:loaded-by", value=c) for c in dict.fromkeys(loaded_by)]
        properties += [Property(name="auditor:shadowed", value=f"by {w}") for w in dict.fromkeys(shadowed_by)]
        ref = self._ref(f"numeric:{lib.get('component')}:{path}", "copy")
        return Component(
            type=ComponentType.LIBRARY, name=str(lib.get("component")), version=lib.get("version"),
            purl=_purl(owner_purl), bom_ref=ref, properties=properties,
            evidence=_evidence(ref, path, lib.get("version"), lib.get("evidence") or []))

    # -- frameworks ----------------------------------------------------------------------------
    def _framework(self, fw: dict[str, Any]) -> Component:
        path = _norm(fw.get("path"))
        sources = {_norm(e.get("source")) for e in fw.get("evidence") or [] if e.get("kind") == "metadata"}
        owner = next((p for p, _ in self.packages if _norm(p.get("path")) in sources), None)
        owner_purl = owner.get("purl") if owner else None
        built_for = fw.get("built_for") or {}
        properties = _props(("auditor:path", path), ("auditor:layer", fw.get("layer")),
                            ("auditor:package", owner_purl))
        properties += _props(*((f"auditor:built-for:{key}", built_for[key]) for key in sorted(built_for)))
        ref = self._ref(f"framework:{fw.get('name')}:{path}", "copy")
        return Component(
            type=ComponentType.FRAMEWORK, name=str(fw.get("name")), version=fw.get("version"),
            purl=_purl(owner_purl), bom_ref=ref, properties=properties,
            evidence=_evidence(ref, path, fw.get("version"), fw.get("evidence") or [], agreeing_only=True))

    def _framework_for(self, name: str | None, consumer: str) -> Component | None:
        candidates = [(fw, c) for fw, c in self.frameworks if fw.get("name") == name]
        best = max(candidates, key=lambda fc: _common_prefix(_norm(fc[0].get("path")), consumer),
                   default=None)
        return best[1] if best else None

    # -- findings ------------------------------------------------------------------------------
    def _findings(self, image: Component) -> None:
        for finding in self.doc.get("findings") or []:
            component = self.by_path.get(_norm(finding.get("path"))) or image
            component.properties.add(Property(name="auditor:finding", value=str(finding.get("id"))))

    # -- dependencies --------------------------------------------------------------------------
    def _dependencies(self, image: Component, components: list[Component]) -> list[Dependency]:
        edges: dict[str, set[str]] = {str(c.bom_ref.value): set() for c in components}
        linkage = self.doc.get("linkage") or {}
        for consumer in linkage.get("consumers") or []:
            consumer_path = _norm(consumer.get("path"))
            for resolution in consumer.get("resolutions") or []:
                target = self.libraries.get(_norm(resolution.get("file")))
                if target is None:
                    continue
                source = self.libraries.get(_norm(resolution.get("requester"))) or \
                    self.libraries.get(consumer_path) or \
                    self._framework_for(consumer.get("framework"), consumer_path)
                if source is None or source is target:
                    continue
                edges[str(source.bom_ref.value)].add(str(target.bom_ref.value))
        out = [Dependency(ref=image.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components])]
        by_ref = {str(c.bom_ref.value): c for c in components}
        for ref, targets in edges.items():
            out.append(Dependency(ref=by_ref[ref].bom_ref,
                                  dependencies=[Dependency(ref=by_ref[t].bom_ref) for t in sorted(targets)]))
        return out


# -- helpers ---------------------------------------------------------------------------------------
class _OciPurl(PackageURL):
    """An oci purl written as the purl spec's examples write it: ``@sha256%3A…``
    (packageurl-python leaves the version's colon unencoded; both parse the same)."""

    __slots__ = ()

    def to_string(self, encode: bool | None = True) -> str:
        text = super().to_string(encode)
        if encode and self.version and ":" in self.version:
            text = text.replace(f"@{self.version}", "@" + self.version.replace(":", "%3A"), 1)
        return text

    def __str__(self, *args: Any, **kwargs: Any) -> str:
        return self.to_string()


def _norm(path: Any) -> str:
    return str(path or "").lstrip("/")


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _props(*pairs: tuple[str, Any]) -> list[Property]:
    return [Property(name=name, value=str(value)) for name, value in pairs if value not in (None, "")]


def _purl(text: str | None) -> PackageURL | None:
    if not text:
        return None
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return None


def _arch(platform: str | None) -> str | None:
    parts = (platform or "").split("/")
    return parts[1] if len(parts) >= 2 and parts[1] else None


def _image_name(reference: dict[str, Any], source: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(component name, repository_url, tag) of the image, from its reference or, for an archive
    or an engine image named by its ID, the first tag the source recorded."""
    ref: ImageRef | None
    try:
        ref = parse_reference(str(reference.get("canonical") or reference.get("input") or ""))
    except AuditorError:
        ref = None
    if ref is not None and ref.repository:
        return f"{ref.registry}/{ref.repository}", f"{ref.registry}/{ref.repository}", ref.tag
    for tag in source.get("repo_tags") or []:
        try:
            tagged = parse_registry_reference(str(tag))
        except AuditorError:
            continue
        return f"{tagged.registry}/{tagged.repository}", f"{tagged.registry}/{tagged.repository}", tagged.tag
    if ref is not None and ref.tag and "/" in ref.tag:  # an OCI layout's ref.name as a full reference
        try:
            tagged = parse_registry_reference(ref.tag)
            return f"{tagged.registry}/{tagged.repository}", f"{tagged.registry}/{tagged.repository}", \
                tagged.tag
        except AuditorError:
            pass
    if ref is not None and ref.path:
        base = _ARCHIVE_SUFFIX.sub("", ref.path.rstrip("/").rsplit("/", 1)[-1]) or "image"
        return base, None, ref.tag
    if ref is not None and ref.engine_ref:
        return ref.engine_ref, None, None
    return str(reference.get("canonical") or "image"), None, None


def _licenses(values: Iterable[str]) -> list[License]:
    """SPDX ids as ids and anything else as a name; but when there is a compound SPDX
    expression, one expression (CycloneDX allows an expression only alone): the expressions
    and the ids joined with AND, the names left out."""
    factory = LicenseFactory()
    ids: dict[str, None] = {}
    names: dict[str, None] = {}
    expressions: dict[str, None] = {}
    for raw in values:
        value = str(raw).strip()
        if not value or any(ord(ch) < 32 for ch in value):
            continue  # unparsable
        try:
            ids[str(factory.make_with_id(value).id)] = None
            continue
        except InvalidSpdxLicenseException:
            pass
        try:
            factory.make_with_expression(value)
            expressions[value] = None
        except InvalidLicenseExpressionException:
            names[value] = None
    if expressions:
        parts = [*expressions, *ids]
        joined = parts[0] if len(parts) == 1 else " AND ".join(f"({p})" if " " in p else p for p in parts)
        return [LicenseExpression(joined)]
    out: list[License] = [DisjunctiveLicense(id=i) for i in ids]
    return out + [DisjunctiveLicense(name=n) for n in names]


def _agrees(implied: str, concluded: str | None) -> bool:
    if not concluded:
        return False
    a, b = implied.split("."), concluded.split(".")
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _evidence(ref: str, path: str, version: str | None, evidence: list[dict[str, Any]],
              agreeing_only: bool = False) -> ComponentEvidence:
    """The component's file as an occurrence (and each symbol read in it); every reading that
    implies a version as a method of the version's identity: one that contradicts it with
    confidence 0, or left out with ``agreeing_only`` (a framework's build_info constants name
    the versions of what it was built for, not its own)."""
    symbols: dict[str, None] = {}
    methods: list[Method] = []
    for e in evidence:
        kind, source = str(e.get("kind")), str(e.get("source") or "")
        if path and kind not in NON_FILE_KINDS and source.startswith(f"{path}:"):
            symbols[source[len(path) + 1:]] = None
        if not e.get("version"):
            continue
        technique, confidence = TECHNIQUES.get(kind, UNKNOWN_TECHNIQUE)
        if not _agrees(str(e["version"]), version):
            if agreeing_only:
                continue
            confidence = Decimal("0")  # a reading that contradicts the version concluded
        methods.append(Method(technique=technique, confidence=confidence,
                              value=f"{kind} {source}: {e.get('value')} (version {e['version']})"))
    # each occurrence has a bom-ref: the library orders occurrences by it, and one without
    # orders by chance (by its object's id)
    places = [(path, None)] + [(path, symbol) for symbol in symbols] if path else []
    occurrences = [Occurrence(bom_ref=f"{ref}|occurrence:{n}", location=location, symbol=symbol)
                   for n, (location, symbol) in enumerate(places)]
    identity = []
    if version and methods:
        identity.append(Identity(field=IdentityField.VERSION, concluded_value=version, methods=methods,
                                 confidence=max(m.confidence for m in methods)))
    return ComponentEvidence(identity=identity, occurrences=occurrences)
