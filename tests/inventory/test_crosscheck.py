"""Framework built-for versions against the libraries in the image (pure: no files)."""

import pytest

from auditor.inventory.base import FileView, Inventory
from auditor.inventory.crosscheck import run, version_prefix_matches
from auditor.model import Framework, Library
from auditor.rootfs.index import RootfsIndex


@pytest.mark.parametrize(("built", "present", "ok"), [
    ("8", "8.1.0", True), ("8", "9.1.0", False), ("11.2", "11.2.152", True),
    ("11.2", "11.8.89", False), ("13.0", "13.0.48", True), ("8.1.0", "8.1", False),
    ("2.18.3", "2.18.3", True),
])
def test_version_prefix_matches(built: str, present: str, ok: bool) -> None:
    assert version_prefix_matches(built, present) is ok


def _inventory(built_for: dict[str, str], libraries: list[Library]) -> Inventory:
    inventory = Inventory(libraries=libraries, frameworks=[
        Framework("tensorflow", "2.8.0", "usr/lib/tf/build_info.py", 2, built_for)])
    run(FileView(RootfsIndex(), lambda d: None), inventory)
    return inventory


def test_framework_built_for_other_cudnn_is_a_finding() -> None:
    inv = _inventory({"cudnn": "8", "cuda": "11.2"},
                     [Library("cudnn", "usr/lib/libcudnn.so.9", 1, "9.1.0"),
                      Library("cudart", "usr/lib/libcudart.so.11.0", 1, "11.2.152")])
    assert [(f.id, f.component, f.severity) for f in inv.findings] == [
        ("built-for-mismatch", "cudnn", "high")]
    message = inv.findings[0].message
    assert "tensorflow 2.8.0 was built for cudnn 8" in message and "9.1.0" in message


def test_any_matching_copy_satisfies_and_absent_libraries_say_nothing() -> None:
    inv = _inventory({"cudnn": "8"}, [Library("cudnn", "a/libcudnn.so.9", 1, "9.1.0"),
                                      Library("cudnn", "b/libcudnn.so.8", 1, "8.9.7")])
    assert inv.findings == []  # which copy is loaded is the linkage stage's question
    assert _inventory({"cuda": "11.2"}, []).findings == []
