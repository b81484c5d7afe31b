"""Local image files: ``docker save`` tarballs and OCI image layouts (a directory or a tar).

Both are read in place, through one small "tree" abstraction over a directory or a tar file
(random access to members, nothing extracted). Paths named inside the files (manifest.json's
``Layers``, blob digests) are checked before use, so a hostile archive cannot make us read a
file outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from auditor import mediatypes as mt
from auditor.digest import digest_bytes, parse_digest
from auditor.errors import InputError, NotFoundError
from auditor.model import Descriptor
from auditor.reference import ImageRef
from auditor.rootfs.walker import normalize_path
from auditor.sources.base import MAX_MANIFEST_BYTES, Root, Source, load_json
from auditor.streams import SizedReader

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class _Tree:
    """Files of a directory or of a tar, by relative path."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._file: BinaryIO | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if self.path.is_dir():
            self._root = self.path.resolve()
        elif self.path.is_file():
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            try:
                with tarfile.open(fileobj=self._file, mode="r:") as tar:
                    for member in tar.getmembers():
                        name, reason = normalize_path(member.name)
                        if name and not reason and member.isfile():
                            self._members[name] = member
            except (tarfile.TarError, EOFError) as err:
                self._file.close()
                raise InputError(f"{what} {self.path} is not a readable tar file ({err})") from None
        else:
            raise NotFoundError(f"{what} {self.path} does not exist")

    def _checked(self, name: str) -> str:
        normal, reason = normalize_path(name)
        if reason or not normal:
            raise InputError(f"{self.what} {self.path} names a bad path {name!r}: {reason}")
        return normal

    def exists(self, name: str) -> bool:
        name = self._checked(name)
        if self._file is not None:
            return name in self._members
        return self._local(name, must_exist=False) is not None

    def _local(self, name: str, must_exist: bool = True) -> Path | None:
        full = (self._root / name).resolve()
        if not full.is_relative_to(self._root):
            raise InputError(f"{self.what} {self.path}: {name} links outside the directory")
        if not full.is_file():
            if must_exist:
                raise InputError(f"{self.what} {self.path} has no file {name}")
            return None
        return full

    def open(self, name: str) -> BinaryIO:
        name = self._checked(name)
        if self._file is not None:
            member = self._members.get(name)
            if member is None:
                raise InputError(f"{self.what} {self.path} has no file {name}")
            if member.issparse():  # docker and podman never write one
                raise InputError(f"{self.what} {self.path}: {name} is a sparse tar member "
                                 "(not supported)")
            return _Span(self._file.fileno(), member.offset_data, member.size)
        return open(self._local(name), "rb")  # type: ignore[arg-type]

    def read(self, name: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{self.what} {self.path}: {name} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Span(SizedReader):
    """Bytes ``[start, start + size)`` of an open file, read with ``pread``: spans of one file
    are read at once from several threads (layers read concurrently), each at its own place,
    and all from the file the tar's index was read from."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__(size)
        self._fd, self._start = fd, start

    def read(self, n: int | None = -1) -> bytes:
        n = self.wanted(n)
        if n == 0:
            return b""
        data = os.pread(self._fd, n, self._start + self.position)
        self.position += len(data)
        return data


def _blob_path(digest: str) -> str:
    algorithm, hexpart = parse_digest(digest)
    return f"blobs/{algorithm}/{hexpart}"


class OciLayoutSource(Source):
    """``oci:DIR[:tag]`` and ``oci-archive:PATH[:tag]``."""

    def __init__(self, ref: ImageRef, tree: _Tree | None = None) -> None:
        super().__init__(ref)
        kind = "OCI layout" if ref.transport == "oci" else "OCI archive"
        self.tree = tree or _Tree(ref.path or "", kind)
        if not self.tree.exists("index.json"):
            raise InputError(f"{kind} {ref.path} has no index.json (not an OCI image layout)")

    def root(self) -> Root:
        index_bytes = self.tree.read("index.json")
        index = load_json(index_bytes, f"index.json of {self.ref.path}")
        entries = index.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"index.json of {self.ref.path} lists no manifests")
        descs = [Descriptor.from_json(e, f"index.json of {self.ref.path}") for e in entries]
        chosen = self._select(descs)
        if chosen is None:  # untagged, per-platform entries: index.json is the image index
            return Root(index_bytes, mt.OCI_INDEX)
        return Root(self._read_blob(chosen), chosen.media_type or None, digest=chosen.digest)

    def _select(self, descs: list[Descriptor]) -> Descriptor | None:
        tag = self.ref.tag
        if tag is not None:
            for d in descs:
                names = (d.annotations.get(REF_NAME), d.annotations.get(CONTAINERD_NAME))
                if tag in names or any(n and n.endswith(f":{tag}") for n in names):
                    return d
            raise NotFoundError(f"{self.ref.path} has no image tagged {tag!r}; "
                                f"tags: {', '.join(_tags(descs)) or 'none'}")
        if len(descs) == 1:
            return descs[0]
        if all(d.platform is not None for d in descs):
            return None
        raise InputError(f"{self.ref.path} holds {len(descs)} images; name one with "
                         f"{self.ref.transport}:{self.ref.path}:TAG (tags: "
                         f"{', '.join(_tags(descs)) or 'none'})")

    def _read_blob(self, desc: Descriptor) -> bytes:
        return self.tree.read(_blob_path(desc.digest))

    def manifest(self, descriptor: Descriptor) -> bytes:
        return self._read_blob(descriptor)

    def blob(self, descriptor: Descriptor, offset: int = 0) -> tuple[BinaryIO, int]:
        return self.tree.open(_blob_path(descriptor.digest)), 0

    def facts(self) -> dict[str, Any]:
        return {"path": str(self.tree.path)}

    def close(self) -> None:
        self.tree.close()


def _tags(descs: list[Descriptor]) -> list[str]:
    return [t for d in descs for t in [d.annotations.get(REF_NAME) or
                                       d.annotations.get(CONTAINERD_NAME)] if t]


class DockerArchiveSource(Source):
    """``docker-archive:PATH``: what ``docker save`` / ``podman save`` write.

    The classic form has no manifest, only ``manifest.json`` naming a config and layer tars; a
    Docker v2 manifest is synthesized from it (its digest is not an identity: the image ID is).
    The form newer Docker writes is an OCI layout as well, and is read as one.
    """

    def __init__(self, ref: ImageRef | str | os.PathLike[str]) -> None:
        if not isinstance(ref, ImageRef):
            ref = ImageRef("docker-archive", f"docker-archive:{ref}", path=str(ref))
        super().__init__(ref)
        self.tree = _Tree(ref.path or "", "docker archive")
        self._oci: OciLayoutSource | None = None
        self._paths: dict[str, str] = {}
        self.repo_tags: list[str] = []
        if not self.tree.exists("manifest.json") and self.tree.exists("index.json"):
            self._oci = OciLayoutSource(ref, self.tree)

    def root(self) -> Root:
        if self._oci is not None:
            return self._oci.root()
        if not self.tree.exists("manifest.json"):
            raise InputError(f"docker archive {self.ref.path} has no manifest.json "
                             "(not a docker save tarball)")
        try:
            entries = json.loads(self.tree.read("manifest.json"))
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"manifest.json of {self.ref.path} is not valid JSON ({err})") from None
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise InputError(f"manifest.json of {self.ref.path} lists no image")
        if len(entries) > 1:
            tags = [t for e in entries if isinstance(e, dict) for t in e.get("RepoTags") or []]
            raise InputError(f"docker archive {self.ref.path} holds {len(entries)} images "
                             f"({', '.join(tags)}); save one image per archive")
        entry = entries[0]
        self.repo_tags = [str(t) for t in entry.get("RepoTags") or []]
        config_path, layer_paths = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise InputError(f"manifest.json of {self.ref.path} lacks Config or Layers")
        config_bytes = self.tree.read(config_path, 32 << 20)
        config_digest = digest_bytes(config_bytes)
        self._paths[config_digest] = config_path
        config = load_json(config_bytes, f"config of {self.ref.path}")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = []
        for i, path in enumerate(layer_paths):
            if not isinstance(path, str):
                raise InputError(f"manifest.json of {self.ref.path}: layer {i} is not a path")
            diff_id = diff_ids[i] if i < len(diff_ids) and isinstance(diff_ids[i], str) else None
            layers.append(self._layer_descriptor(path, diff_id))
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers,
        }
        return Root(json.dumps(manifest, indent=3).encode(), mt.DOCKER_MANIFEST, synthesized=True)

    def _layer_descriptor(self, path: str, diff_id: str | None) -> dict[str, Any]:
        with self.tree.open(path) as f:
            head = f.read(4)
        compressed = head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd"
        media_type = (mt.DOCKER_LAYER_GZIP if head[:2] == b"\x1f\x8b" else
                      mt.OCI_LAYER_ZSTD if compressed else mt.DOCKER_LAYER_TAR)
        # An uncompressed layer's digest is its diff_id; the read verifies it. Otherwise hash it.
        digest = diff_id if (diff_id and not compressed) else self._hash(path)
        size = self._size(path)
        self._paths[digest] = path
        return {"mediaType": media_type, "digest": digest, "size": size}

    def _hash(self, path: str) -> str:
        h = hashlib.sha256()
        with self.tree.open(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"sha256:{h.hexdigest()}"

    def _size(self, path: str) -> int:
        with self.tree.open(path) as f:
            f.seek(0, os.SEEK_END)
            return f.tell()

    def manifest(self, descriptor: Descriptor) -> bytes:
        if self._oci is not None:
            return self._oci.manifest(descriptor)
        raise InputError(f"docker archive {self.ref.path} has no manifest {descriptor.digest}")

    def blob(self, descriptor: Descriptor, offset: int = 0) -> tuple[BinaryIO, int]:
        if self._oci is not None:
            return self._oci.blob(descriptor, offset)
        path = self._paths.get(descriptor.digest)
        if path is None:
            raise InputError(f"docker archive {self.ref.path} has no blob {descriptor.digest}")
        return self.tree.open(path), 0

    def facts(self) -> dict[str, Any]:
        return {"path": str(self.tree.path), "repo_tags": self.repo_tags}

    def close(self) -> None:
        self.tree.close()

