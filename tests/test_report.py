"""Tests of darkknowledge.report: the self-contained HTML page and its figures.

The page is checked by parsing it (html.parser), by decoding its images, and by loading
it in headless Chromium (skipped when Chromium is absent, unless
DARKKNOWLEDGE_REQUIRE_CHROMIUM=1, which CI sets).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from darkknowledge.report import headline, plots, render_report, render_report_from_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = [str(i) for i in range(10)]
N_TEST = 450


# --------------------------------------------------------------------------- fixtures
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def _confusion(rng: np.random.Generator, errors: int) -> list[list[int]]:
    """A (10, 10) confusion matrix over 450 test samples with exactly ``errors`` errors."""
    per_class = np.full(10, N_TEST // 10)  # (10,) 45 samples per class
    mat = np.diag(per_class).astype(int)
    for _ in range(errors):
        true = int(rng.integers(10))
        while mat[true, true] == 0:
            true = int(rng.integers(10))
        pred = int((true + rng.choice([1, 3, 5, 8])) % 10)
        mat[true, true] -= 1
        mat[true, pred] += 1
    return mat.tolist()


def _reliability(rng: np.random.Generator, accuracy: float) -> dict:
    edges = np.linspace(0.0, 1.0, 16)  # (16,) 15 bins
    centers = 0.5 * (edges[:-1] + edges[1:])
    counts = np.zeros(15, dtype=int)
    counts[-5:] = [6, 10, 18, 40, N_TEST - 74]
    acc = np.clip(centers - rng.uniform(0.0, 0.06, 15) + (accuracy - 0.97), 0.0, 1.0)
    conf = [float(c) if n else 0.0 for c, n in zip(centers, counts)]
    return {
        "bin_edges": edges.tolist(),
        "bin_confidence": conf,
        "bin_accuracy": [float(a) if n else 0.0 for a, n in zip(acc, counts)],
        "bin_count": counts.tolist(),
    }


def _history(epochs: int, final_acc: float, start_loss: float) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        out.append({
            "epoch": e,
            "loss": start_loss * (0.08 + 0.92 * (1 - frac) ** 2),
            "accuracy": 0.6 + (final_acc - 0.6) * frac ** 0.5,
            "val_loss": 0.3 * (1.1 - frac),
            "val_accuracy": 0.55 + (final_acc - 0.55) * frac ** 0.4,
            "lr": 0.05,
            "seconds": 0.3,
        })
    return out


def _model(rng, name, role, params, errors, *, agreement, kl, latency, epochs=6, seeds=None):
    acc = (N_TEST - errors) / N_TEST
    return {
        "name": name, "role": role, "params": params, "test_errors": errors,
        "n_test": N_TEST, "accuracy": acc, "nll": 0.05 + errors / 300, "ece": 0.004 + errors / 4000,
        "agreement": agreement, "kl_to_teacher": kl, "latency_ms_per_sample": latency,
        "seeds": seeds, "accuracy_std": 0.004 if seeds else None,
        "history": _history(epochs, acc, 2.3 if "distilled" not in role else 1.4),
        "confusion": _confusion(rng, errors),
        "reliability": _reliability(rng, acc),
    }


def make_results() -> dict:
    """A realistic results.json dict: 10 classes, 4 models, a 3x3 sweep, soft targets."""
    rng = np.random.default_rng(0)
    models = [
        _model(rng, "teacher member 0 (mlp 2x1200)", "teacher-member", 1_276_810, 13,
               agreement=0.981, kl=0.021, latency=0.0061),
        _model(rng, "teacher (mlp 2x1200)", "teacher", 1_276_810, 11,
               agreement=None, kl=None, latency=0.0123),
        _model(rng, "student alone (mlp 2x64)", "student-alone", 8_970, 19,
               agreement=0.962, kl=0.112, latency=0.00081, seeds=[0, 1, 2]),
        _model(rng, "student distilled (mlp 2x64)", "student-distilled", 8_970, 14,
               agreement=0.978, kl=0.043, latency=0.00079, seeds=[0, 1, 2]),
    ]
    temps = ["1", "4", "20"]
    examples = []
    for index, label in ((3, 2), (17, 7), (42, 9)):
        logits = rng.normal(0.0, 2.0, 10)
        logits[label] += 9.0
        logits[(label + 3) % 10] += 4.0
        examples.append({
            "index": index, "label": label, "label_name": CLASSES[label],
            "probs": {t: _softmax(logits / float(t)).tolist() for t in temps},
        })
    sweep = [
        {"temperature": t, "alpha": a,
         "val_accuracy": 0.93 + 0.01 * np.log2(t) - 0.05 * a + 0.002 * i,
         "val_nll": 0.25 - 0.02 * np.log2(t) + 0.1 * a}
        for i, (t, a) in enumerate((t, a) for a in (0.1, 0.5, 0.9) for t in (1.0, 4.0, 16.0))
    ]
    return {
        "darkknowledge_version": "0.1.0",
        "created": "2026-11-23T18:00:00Z",
        "config": {"dataset": {"name": "digits"}, "teacher": {"hidden": [1200, 1200]},
                   "student": {"hidden": [64, 64]}, "distill": {"temperature": 4.0}},
        "dataset": {"name": "digits", "num_train": 1077, "num_val": 270, "num_test": N_TEST,
                    "num_classes": 10, "class_names": CLASSES, "input_shape": [64]},
        "models": models,
        "distillation": {"temperature": 4.0, "alpha": 0.1, "divergence": "kl",
                         "gap_closed": (19 - 14) / (19 - 11)},
        "sweep": sweep,
        "sweep_best": {"temperature": 16.0, "alpha": 0.1},
        "soft_targets": {
            "examples": examples,
            "per_class_entropy_bits": {t: rng.uniform(0.05, 1.5, 10).tolist() for t in ("1", "4")},
            "dark_mass": {t: rng.uniform(0.01, 0.4, 10).tolist() for t in ("1", "4")},
            "similar_classes": [[c, [(c + 3) % 10, (c + 5) % 10, (c + 8) % 10]] for c in range(10)],
        },
        "timing": {"teacher_seconds": 3.1, "soft_targets_seconds": 0.1,
                   "student_alone_seconds": 1.0, "student_distilled_seconds": 1.1,
                   "total_seconds": 6.0},
    }


def make_light_results() -> dict:
    """The same run without the costly figures (histories, calibration, soft-target bars,
    sweep), for the tests that only need the page's text: it renders in a fraction of the
    time."""
    results = make_results()
    for m in results["models"]:
        m.pop("history")
        m.pop("reliability")
    results["sweep"] = []
    results["soft_targets"] = {"similar_classes": results["soft_targets"]["similar_classes"]}
    return results


class _PageParser(HTMLParser):
    """Collects tags with attributes, the results table's cells, and all visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self.headline = ""
        self.text: list[str] = []
        self._in_results = False
        self._in_body = False
        self._cell: list[str] | None = None
        self._in_headline = False
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "table" and "results" in (attrs.get("class") or ""):
            self._in_results = True
        if self._in_results and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self._cell = []
        if tag == "p" and attrs.get("class") == "headline":
            self._in_headline = True

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table":
            self._in_results = self._in_body = False
        if tag == "p":
            self._in_headline = False

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_headline:
            self.headline += data


def _parse(path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The realistic results rendered once; (results, path) shared by the page tests."""
    results = make_results()
    before = copy.deepcopy(results)
    out = render_report(results, tmp_path_factory.mktemp("report") / "report.html")
    assert results == before  # rendering does not mutate its input
    return results, out


# --------------------------------------------------------------------------- the page
def test_page_is_self_contained_and_images_are_png(rendered):
    _, out = rendered
    text = out.read_text(encoding="utf-8")
    page = _parse(out)
    assert text.startswith("<!DOCTYPE html>")
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert not re.match(r"\s*(https?:)?//", value), (tag, key, value[:60])
        assert tag not in ("link", "iframe", "object", "embed"), tag
        if tag == "script":
            assert "src" not in attrs
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text)
    imgs = [attrs for tag, attrs in page.tags if tag == "img"]
    # size, learning curves, soft targets, dark mass, sweep, reliability, confusion
    assert len(imgs) == 7
    for attrs in imgs:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        raw = base64.b64decode(attrs["src"][len(prefix):], validate=True)
        assert raw[:8] == PNG_MAGIC
        width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
        assert width > 300 and height > 150
        assert attrs.get("alt")


def test_table_numbers_match_input(rendered):
    results, out = rendered
    rows = _parse(out).rows
    models = results["models"]
    assert len(rows) == len(models)
    for row, m in zip(rows, models):
        assert len(row) == 9
        assert row[0].startswith(m["name"])
        assert int(row[1].replace(",", "")) == m["params"]
        assert int(row[2]) == m["test_errors"]
        acc = float(row[3].split("%")[0])
        assert acc == pytest.approx(100 * m["accuracy"], abs=0.005)
        assert float(row[4]) == pytest.approx(m["nll"], abs=5e-5)
        assert float(row[5].rstrip(" %")) == pytest.approx(100 * m["ece"], abs=0.0051)
        if m["agreement"] is None:
            assert row[6] == "—" and row[7] == "—"
        else:
            assert float(row[6].rstrip(" %")) == pytest.approx(100 * m["agreement"], abs=0.005)
            assert float(row[7]) == pytest.approx(m["kl_to_teacher"], abs=5e-5)
        value, unit = row[8].split()
        assert unit == "µs"
        assert float(value) == pytest.approx(1000 * m["latency_ms_per_sample"], rel=5e-3)
    # rows aggregating several seeds show the spread and the seed count
    assert "± 0.40" in rows[3][3] and "3 seeds" in rows[3][0]


def test_headline_numbers(rendered):
    results, out = rendered
    teacher, alone, distilled = results["models"][1:]
    ratio = round(teacher["params"] / distilled["params"])  # 142
    kept = 100 * distilled["accuracy"] / teacher["accuracy"]  # 436 / 439
    gap = 100 * (19 - 14) / (19 - 11)  # 62.5, rounds half-even to 62
    expected = (
        f"The distilled student ({distilled['name']}, {ratio}x smaller) keeps {kept:.1f} % of "
        f"the teacher's accuracy: 14 test errors vs 11 for the teacher and 19 alone; "
        f"distillation closed {gap:.0f} % of the gap."
    )
    assert expected == (
        "The distilled student (student distilled (mlp 2x64), 142x smaller) keeps 99.3 % of "
        "the teacher's accuracy: 14 test errors vs 11 for the teacher and 19 alone; "
        "distillation closed 62 % of the gap."
    )
    assert headline(results) == expected
    assert " ".join(_parse(out).headline.split()) == expected


def test_headline_variants():
    results = make_results()
    teacher, alone, distilled = results["models"][1:]
    distilled["test_errors"] = 23  # worse than alone: (19 - 23) / (19 - 11) = -50 %
    assert headline(results).endswith("distillation did not help: it widened the gap by 50 %.")
    alone["test_errors"] = 11
    assert headline(results).endswith("the student alone already matched the teacher.")
    results["models"] = [m for m in results["models"] if m["role"] != "student-alone"]
    assert headline(results).endswith("23 test errors vs 11 for the teacher.")
    results["models"] = [teacher]
    assert headline(results) == (
        "1 model evaluated; the most accurate is teacher (mlp 2x1200) with 97.6 % test "
        "accuracy (11 test errors of 450)."
    )


def test_text_from_json_is_escaped(tmp_path):
    results = make_light_results()
    evil = '<script>alert("x")</script> & <b>'
    results["models"][3]["name"] = evil
    results["dataset"]["class_names"][2] = "<img src=x onerror=alert(1)>"
    results["config"]["note"] = "</pre><script>bad()</script>"
    out = render_report(results, tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<script>bad" not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in text
    page = _parse(out)
    assert [t for t, _ in page.tags].count("script") == 1  # only our own inline script
    assert page.rows[3][0].startswith(evil)  # the parser decodes it back to the raw name


def test_missing_optional_parts_become_notes(tmp_path):
    results = make_results()
    results["sweep"] = []
    results["sweep_best"] = None
    del results["soft_targets"]
    del results["timing"]
    for m in results["models"]:
        m["seeds"] = None
        m["accuracy_std"] = None
        m.pop("history")
        m.pop("reliability")
    out = render_report(results, tmp_path / "r.html")
    page = _parse(out)
    text = " ".join(page.text)
    assert "No temperature/α sweep was run" in text
    assert "No soft targets in results.json" in text
    assert "No training histories in results.json" in text
    assert "No reliability data in results.json" in text
    assert "No timing in results.json" in text
    assert sum(1 for tag, _ in page.tags if tag == "img") == 2  # size + confusion remain


def test_malformed_optional_part_is_a_note_not_a_crash(tmp_path):
    results = make_light_results()
    results["sweep"] = [{"alpha": 0.1}]  # no temperature
    out = render_report(results, tmp_path / "r.html")
    assert "The sweep could not be drawn from results.json (KeyError" in out.read_text("utf-8")
    # odd shapes of other optional parts are tolerated too
    results["dataset"]["input_shape"] = 64
    results["distillation"] = "kl"
    results["sweep"] = make_results()["sweep"][:2]  # two cells, one alpha: drawn as lines
    results["sweep_best"] = {"temperature": 4.0, "alpha": None}
    out = render_report(results, tmp_path / "r2.html")
    raw = out.read_text("utf-8")
    text = " ".join("".join(_parse(out).text).split())
    assert "Chosen on validation: T = 4 (marked)." in text
    subtitle = re.search(r'<p class="subtitle">(.*?)</p>', raw).group(1)
    assert subtitle == "1,077 train / 270 validation / 450 test samples · 10 classes"
    assert "could not be drawn" not in raw and raw.count("<img") == 3  # size, sweep, confusion


def test_minimal_results(tmp_path):
    results = {"models": [{"name": "only", "role": "student-alone", "params": 10,
                           "test_errors": 0, "n_test": 5, "accuracy": 1.0}]}
    out = render_report(results, tmp_path / "deep" / "dir" / "r.html")
    page = _parse(out)
    assert page.rows == [
        ["only student, alone", "10", "0", "100.00 %", "—", "—", "—", "—", "—"]
    ]
    assert list(tmp_path.glob("deep/dir/*")) == [out]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda r: r.pop("models"), ValueError, r"results is missing required key 'models'\."),
        (lambda r: r.update(models=[]), ValueError,
         r"results\['models'\] must be a non-empty list"),
        (lambda r: r["models"][2].pop("accuracy"), ValueError,
         r"results\['models'\]\[2\] is missing required key 'accuracy'\."),
        (lambda r: r["models"][0].pop("name"), ValueError,
         r"results\['models'\]\[0\] is missing required key 'name'\."),
        (lambda r: r["models"][1].pop("test_errors"), ValueError,
         r"results\['models'\]\[1\] is missing required key 'test_errors'\."),
        (lambda r: r["models"][1].update(role="student"), ValueError,
         r"results\['models'\]\[1\]\['role'\] must be one of 'teacher', .*got 'student' instead"),
        (lambda r: r["models"][1].update(accuracy=97.3), ValueError,
         r"results\['models'\]\[1\]\['accuracy'\] must be in \[0\.0, 1\.0\], got 97\.3 instead"),
        (lambda r: r["models"][1].update(test_errors=451), ValueError,
         r"\['test_errors'\] must be <= n_test \(450\), got 451 instead"),
        (lambda r: r["models"][1].update(params=1.5), TypeError,
         r"results\['models'\]\[1\]\['params'\] must be an integer, got float instead"),
        (lambda r: r["models"][1].update(nll="0.1"), TypeError,
         r"results\['models'\]\[1\]\['nll'\] must be a number or null, got str instead"),
        (lambda r: r["models"][1].update(name=7), TypeError,
         r"results\['models'\]\[1\]\['name'\] must be a string, got int instead"),
        (lambda r: r["models"].__setitem__(0, "teacher"), TypeError,
         r"results\['models'\]\[0\] must be a dict, got str instead"),
    ],
)
def test_invalid_results_raise(tmp_path, mutate, error, match):
    results = make_results()
    mutate(results)
    with pytest.raises(error, match=match):
        render_report(results, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"results must be a dict, got list instead"):
        render_report([], tmp_path / "r.html")
    with pytest.raises(TypeError, match=r"out_path must be a str or path, got int instead"):
        render_report(make_results(), 3)
    bad = tmp_path / "results.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"results_json_path must point to a valid JSON file"):
        render_report_from_file(bad)
    with pytest.raises(TypeError, match=r"results_json_path must be a str or path, got NoneType"):
        render_report_from_file(None)


def test_render_from_file_defaults_beside_json(tmp_path):
    results = make_light_results()
    src = tmp_path / "run" / "results.json"
    src.parent.mkdir()
    src.write_text(json.dumps(results), encoding="utf-8")
    out = render_report_from_file(str(src))
    assert out == src.with_name("report.html") and out.is_file()
    assert [r[2] for r in _parse(out).rows] == ["13", "11", "19", "14"]
    other = render_report_from_file(src, tmp_path / "elsewhere.html")
    assert other == tmp_path / "elsewhere.html" and other.is_file()


def test_report_does_not_import_pyplot():
    code = (
        "import sys, darkknowledge.report as r, darkknowledge.report.plots as p;"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    proc = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"


# --------------------------------------------------------------------------- Chromium
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium():
    path = _chromium()
    if path is None:
        if os.environ.get("DARKKNOWLEDGE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("DARKKNOWLEDGE_REQUIRE_CHROMIUM=1 but no chromium executable on PATH")
        pytest.skip("headless Chromium is not installed (apt-get install chromium); "
                    "set DARKKNOWLEDGE_REQUIRE_CHROMIUM=1 to make this a failure")
    return path


def _run_chromium(exe: str, page, tmp_path, *extra: str) -> tuple[str, list[str]]:
    """Load ``page`` headless; return (dumped DOM or "", console lines about the page)."""
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr", "--v=0", *extra, page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium 156 prints every console message (log, error, uncaught exception, CSP
    # violation) as "[...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)".
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_console_check_catches_a_broken_page(chromium, tmp_path):
    """The console assertion below can fail: a page with errors is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body><p>x</p>"
        '<img src="https://example.invalid/a.png"><script>undefinedFunction();</script>'
        "</body></html>",
        encoding="utf-8",
    )
    _, console = _run_chromium(chromium, page, tmp_path, "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console), console
    assert any("Content Security Policy" in line for line in console), console


def test_page_loads_in_chromium_with_all_figures(chromium, rendered, tmp_path):
    _, out = rendered
    dom, console = _run_chromium(chromium, out, tmp_path, "--dump-dom")
    assert console == []
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, dom[:500]
    assert int(total.group(1)) == 7
    assert int(loaded.group(1)) == 7


def test_screenshot_in_chromium(chromium, rendered, tmp_path):
    _, out = rendered
    shot = tmp_path / "report.png"
    _, console = _run_chromium(chromium, out, tmp_path, f"--screenshot={shot}",
                               "--window-size=1200,3000", "--hide-scrollbars")
    assert console == []
    raw = shot.read_bytes()
    assert raw[:8] == PNG_MAGIC
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert (width, height) == (1200, 3000)


# --------------------------------------------------------------------------- the figures
# Built but not rasterised (no savefig), so these are fast; they check that each figure
# draws the numbers it is given, in the right place.
def test_learning_curves_draw_the_history():
    models = make_results()["models"]
    fig = plots.plot_learning_curves(models)
    ax_loss, ax_acc = fig.axes[:2]
    assert len(ax_loss.lines) == len(models)
    for line, m in zip(ax_acc.lines, models):
        np.testing.assert_allclose(line.get_xdata(), [h["epoch"] for h in m["history"]])
        expected = [100 * h["val_accuracy"] for h in m["history"]]
        np.testing.assert_allclose(line.get_ydata(), expected)
    assert ax_loss.get_yscale() == "log"
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == [
        "ensemble members", *[m["name"] for m in models[1:]]]


def test_sweep_heat_map_places_cells_and_marks_best():
    results = make_results()
    fig = plots.plot_sweep(results["sweep"], results["sweep_best"])
    ax_acc = fig.axes[0]
    grid = np.asarray(ax_acc.images[0].get_array())  # (A, T): rows alpha, columns T
    for s in results["sweep"]:
        i = [0.1, 0.5, 0.9].index(s["alpha"])
        j = [1.0, 4.0, 16.0].index(s["temperature"])
        assert grid[i, j] == pytest.approx(100 * s["val_accuracy"])
    (box,) = ax_acc.patches
    assert box.get_xy() == pytest.approx((2 - 0.48, 0 - 0.48))  # T = 16, alpha = 0.1


def test_sweep_with_one_alpha_draws_lines():
    sweep = [{"temperature": t, "alpha": 0.5, "val_accuracy": a, "val_nll": 0.2}
             for t, a in ((2.0, 0.90), (8.0, 0.93), (1.0, 0.88))]
    fig = plots.plot_sweep(sweep, {"temperature": 8.0, "alpha": 0.5})
    (ax,) = fig.axes
    curve, star = ax.lines
    np.testing.assert_allclose(curve.get_xdata(), [1.0, 2.0, 8.0])
    np.testing.assert_allclose(curve.get_ydata(), [88.0, 90.0, 93.0])
    np.testing.assert_allclose(star.get_ydata(), [93.0])


def test_confusion_colours_only_errors():
    models = make_results()["models"]
    fig = plots.plot_confusion([("a", models[3]["confusion"])], CLASSES)
    (ax,) = fig.axes
    errors_img = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
    assert np.all(np.isnan(np.diag(errors_img)))
    assert np.nansum(errors_img) == models[3]["test_errors"]
    assert ax.get_title().endswith(f"{models[3]['test_errors']} errors")


def test_soft_target_panels_show_probabilities_and_entropy():
    ex = make_results()["soft_targets"]["examples"][0]
    fig = plots.plot_soft_targets([ex], CLASSES)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    for ax, t in zip(axes, ("1", "4", "20")):
        p = np.asarray(ex["probs"][t])
        heights = [bar.get_height() for bar in ax.patches]
        np.testing.assert_allclose(heights, p)
        h_bits = -(p * np.log2(p)).sum()  # independent of the helper: all p > 0 here
        assert ax.get_title() == f"T = {float(t):g} · H = {h_bits:.2f} bits"
