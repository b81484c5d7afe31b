"""The campaign's reports from the aggregated seed campaign (``builders.py``): the accuracy plots
(real PNGs: their IHDR size, no date or software in them, the same bytes twice, and what the axes
hold per the sidecar), the self-contained HTML (plots embedded, hostile names escaped) and the
Markdown (the matrix and models tables, ``|`` escaped)."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image as mpimage

from auditor.campaign.aggregate import aggregate, load_results
from auditor.campaign.html import render_html
from auditor.campaign.markdown import render_markdown
from auditor.campaign.plots import accuracy_plot, jitter, sidecar
from tests.campaign.builders import seed_campaign, write_job

HOSTILE = "<script>alert(1)</script>|x"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    results = seed_campaign(tmp_path / "results")
    write_job(results, "cpu-a--hostile", target="cpu-a", image=HOSTILE, exit_code=2,
              error="pull failed: <img src=x onerror=alert(2)> | denied")
    return aggregate(load_results(results), name="seed-study")


def the_model(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in document["models"] if m["name"] == name)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The PNG's chunks (type, body), CRCs checked."""
    assert data[:8] == PNG_SIGNATURE
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + body) == crc
        out.append((kind, body))
        at += 12 + length
    return out


def png_size(data: bytes) -> tuple[int, int]:
    kind, body = chunks(data)[0]
    assert kind == b"IHDR"
    width, height = struct.unpack(">II", body[:8])
    return width, height


@pytest.mark.parametrize(("width", "height"), [(900, 500), (640, 360)])
def test_the_plot_is_a_png_of_the_size_asked_for(document: dict[str, Any], tmp_path: Path,
                                                 width: int, height: int) -> None:
    out = accuracy_plot(the_model(document, "torch.bilstm"), tmp_path / "plots" / "bilstm.png", width, height)
    data = out.read_bytes()
    assert out == tmp_path / "plots" / "bilstm.png" and len(data) > 1000
    assert png_size(data) == (width, height)
    assert mpimage.imread(out).shape[:2] == (height, width)  # matplotlib's own reader agrees
    assert {kind for kind, _ in chunks(data)} <= {b"IHDR", b"IDAT", b"IEND", b"pHYs"}  # no tEXt, no tIME
    assert json.loads(sidecar(out).read_text())["width_px"] == width


def test_the_plot_holds_a_point_per_run_and_a_bar_per_environment(document: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    model = the_model(document, "torch.bilstm")
    drawn = json.loads(sidecar(accuracy_plot(model, tmp_path / "bilstm.png")).read_text())
    assert drawn["title"] == "torch.bilstm: accuracy range 7.0 % (0.88\u20130.95)"
    assert drawn["xticklabels"] == ["cpu-a\ntorch\nthreads=1", "cpu-a\ntorch\nthreads=2",
                                    "cpu-b\ntorch\nthreads=1", "cpu-b\ntorch\nthreads=2"]
    offsets = jitter(2)
    assert offsets == pytest.approx([-0.14, 0.14])
    expected = [[x + dx, v] for x, env in enumerate(model["environments"])
                for dx, v in zip(offsets, env["values"], strict=True)]
    assert len(drawn["points"]) == len(expected) == 8
    for point, want in zip(drawn["points"], expected, strict=True):
        assert point == pytest.approx(want)
    assert [v for _, v in drawn["points"]] == [0.88] * 4 + [0.95] * 4
    assert drawn["bars"] == [[0, 0.88, 0.88], [1, 0.88, 0.88], [2, 0.95, 0.95], [3, 0.95, 0.95]]


def test_the_plot_is_deterministic_and_copes_with_many_or_no_environments(document: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    model = the_model(document, "numpy.mlp")
    first = accuracy_plot(model, tmp_path / "a.png").read_bytes()
    assert accuracy_plot(model, tmp_path / "b.png").read_bytes() == first
    many = {**model, "environments": model["environments"] * 3}
    drawn = json.loads(sidecar(accuracy_plot(many, tmp_path / "many.png")).read_text())
    assert len(drawn["xticklabels"]) == 24 and drawn["xticklabels"][0] == "cpu-a / numpy / threads=1"
    assert len(drawn["points"]) == 48
    empty = {"name": "x.none", "environments": [], "min": None, "max": None, "range": None}
    out = accuracy_plot(empty, tmp_path / "empty.png")
    assert png_size(out.read_bytes()) == (900, 500)
    assert json.loads(sidecar(out).read_text())["title"] == "x.none: no accuracy recorded"


def test_the_html_is_self_contained_and_escapes_what_results_say(document: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    plots = {m["name"]: accuracy_plot(m, tmp_path / f"{m['name']}.png") for m in document["models"]}
    page = render_html(document, plots)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert base64.b64decode(images[0]) == plots["numpy.mlp"].read_bytes()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|x" in page
    assert "pull failed: &lt;img src=x onerror=alert(2)&gt; | denied" in page
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)  # nothing loaded from elsewhere
    assert "Content-Security-Policy" in page and "<link" not in page
    assert "torch.bilstm: accuracy range 7.0 %" in page and '<td class="failed">' in page
    assert render_html(document, {}).count("<img") == 0  # no plots: no images, still a page


def test_the_markdown_has_the_matrix_and_the_models(document: dict[str, Any]) -> None:
    text = render_markdown(document, {"torch.bilstm": "plots/torch.bilstm.png"})
    lines = text.splitlines()
    assert lines[0] == "# Campaign `seed-study`"
    header = lines.index("## Matrix") + 2
    assert lines[header] == r"| target | `<script>alert(1)</script>\|x` | `numpy` | `torch` |"
    assert lines[header + 1] == "|---|---|---|---|"
    assert lines[header + 2] == (
        "| `cpu-a` | failed: cpu-a--hostile: pull failed: \\<img src=x onerror=alert(2)\\> \\| denied "
        "| ok: 4/4 runs ok; numpy.rnn diverged | ok: 4/4 runs ok; all identical |")
    assert lines[header + 4].startswith("| `cpu-c` | - | failed: cpu-c--numpy: report.json is a probe report")
    for line in lines[header:header + 5]:  # every row has as many cells as the header
        assert len(re.split(r"(?<!\\)\|", line)) == 6
    assert ("| `torch.bilstm` | 0.8800\u20130.9500 (7.0 %) | 8 | hardware | no | no | no | "
            "[plot](<plots/torch.bilstm.png>) |") in lines
    assert "| `torch.dense` | 0.9550 | 8 | - | yes | yes | yes | - |" in lines
    assert ("- torch.bilstm: accuracy range 7.0 % (0.88\u20130.95) across 8 runs "
            "on 2 targets \u00d7 1 image: hardware explains it") in lines
    assert "<script>" not in text.replace("`<script>alert(1)</script>\\|x`", "")  # only inside code spans
