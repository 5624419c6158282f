"""The summary's HTML page as a reader sees it: rendered by headless Chromium, not only parsed.

`mpirunner-report summary FOLDER --html PAGE` over a 12-file sweep (long INVALID reasons, a trend) is
opened in Debian's `chromium` (the fixture installs it with apt-get when it is missing and this is root;
otherwise the tests skip, and with MPIRUNNER_REQUIRE_CLUSTER=1 that skip is a failure). A copy of the page
with one probe script measures the layout in the browser: every SVG text inside its figure, legends off
the data, table rows of bounded height, figures across the width. The page itself has no script.
Run only these: python -m pytest -m browser tests
"""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster import unavailable
from tests.summary_files import write_result_file

pytestmark = pytest.mark.browser

WINDOW = (1280, 2400)
ROW_HEIGHT_MAX_PX = 120  # a table row: a few lines of text, never a paragraph of reasons
FIGURE_SHARE_MIN = 0.9  # of the page's content width
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1")
LONG_REASONS = ("too short: timed 0.349 s < the minimum 1 s (remedy: --min-duration 1 to extend the run, or more "
                "--iterations)",
                "unstable: step-time cv 31.6% on rank 0 on vm > --max-cv 10% (remedy: --until-stable, more "
                "--iterations, or a quieter machine)",
                "not warmed up: first third 298.8% slower than the last (median step 134.550 ms vs 33.737 ms, "
                "beyond the noise) (remedy: more --warmup-iterations, --min-duration or --until-stable)")


def _chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _install_chromium():
    """Debian's chromium with apt-get (root only); None when it is there afterwards, else why not."""
    if _chromium_path():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium is not installed and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if _chromium_path():
        return None
    return f"chromium could not be installed ({' '.join(install)} exit {result.returncode})"


@pytest.fixture(scope="session")
def chromium():
    reason = _install_chromium()
    if reason:
        unavailable(reason)
    return _chromium_path()


def run_chromium(chromium, profile, *args, timeout=120):
    """One headless Chromium run with a fresh profile (--user-data-dir); returns stdout (e.g. --dump-dom)."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    """The page over 12 files of one configuration (several INVALID, with long reasons), a 3-run trend and a peak
    search (the scenario columns, its load figure)."""
    from mpirunner.report import main

    folder = tmp_path_factory.mktemp("browser") / "results"
    folder.mkdir()
    for index in range(12):
        write_result_file(folder / f"sweep-{index:02d}.h5", batch_sizes=(1, 2, 4, 8, 16), slowdown=1.0 + 0.03 * index,
                          created=f"2026-11-{index + 1:02d}T12:00:00+00:00", seed=index,
                          invalid_reasons=LONG_REASONS if index % 4 == 0 else (),
                          device_name="AMD EPYC 7B13 64-Core Processor (a long device name, as CPUs report)")
    write_peak_search(folder / "peak-search.h5")
    path = folder.parent / "summary.html"
    assert main(["summary", str(folder), "--html", str(path), "--by", "created"]) == 0
    return path


def write_peak_search(path):
    """A --find-peak-qps file of five points (enough queries for a p99), as serve.py stores them: its table
    columns and its load figure are on the page too."""
    from mpirunner.runfile.plain import RunResult, write_results

    runs = []
    for order, (qps, p99, upper) in enumerate(((100.0, 5.0, 6.0), (200.0, 9.0, 11.0), (400.0, 80.0, 95.0),
                                                (300.0, 20.0, 24.0), (350.0, 45.0, 52.0))):
        valid = upper <= 30.0
        attrs = {"scenario": "server", "batch_size": 4, "model": "resnet18", "precision": "32.32",
                 "target_qps": qps, "offered_qps": qps, "achieved_qps": qps * 0.99, "queries": 1836,
                 "query_latency_p50": p99 / 4, "query_latency_p90": p99 / 2, "query_latency_p99": p99,
                 "query_latency_p99_ci95_low": p99 * 0.9, "query_latency_p99_ci95_high": p99 * 1.1,
                 "latency_bound": 30.0, "bound_percentile": 99.0, "bound_latency": p99, "bound_latency_upper": upper,
                 "peak_search": True, "peak_point": order, "peak_qps": 300.0, "peak_qps_high": 350.0,
                 "throughput": qps * 0.99, "valid": valid, "status": "measured", "failure_reason": "",
                 "validity_reason": [] if valid else [f"p99 query latency over the bound: {upper} ms > 30 ms"]}
        runs.append(RunResult(name=f"bs00004-qps{qps:012.3f}", attrs=attrs))
    write_results(path, {"world_size": 1, "created": "2026-11-20T12:00:00+00:00", "device_name": "Test CPU"},
                  [{"rank": 0, "host": "a"}], runs)


PROBE = r"""
<script>
function rect(r) { return [r.left, r.top, r.right, r.bottom]; }
function overlaps(a, b) { return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]; }
window.addEventListener("load", function () {
  var out = {texts: [], legends: [], rows: [], figures: [], content: 0};
  var body = document.body, style = getComputedStyle(body);
  out.overflow = document.documentElement.scrollWidth - window.innerWidth;
  out.content = body.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  document.querySelectorAll("#summary tbody tr").forEach(function (tr) {
    out.rows.push(tr.getBoundingClientRect().height);
  });
  var images = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  var holder = document.createElement("div");
  body.appendChild(holder);
  images.forEach(function (img, index) {
    out.figures.push({kind: img.parentElement.className, width: img.getBoundingClientRect().width});
    var bytes = Uint8Array.from(atob(img.src.split(",")[1]), function (c) { return c.charCodeAt(0); });
    holder.innerHTML = new TextDecoder().decode(bytes);
    var svg = holder.querySelector("svg"), box = rect(svg.getBoundingClientRect());
    svg.querySelectorAll("text").forEach(function (text) {
      var r = rect(text.getBoundingClientRect());
      if (r[2] - r[0] > 0 && (r[0] < box[0] - 0.5 || r[1] < box[1] - 0.5 || r[2] > box[2] + 0.5 || r[3] > box[3] + 0.5))
        out.texts.push({figure: index, kind: img.parentElement.className, text: text.textContent, box: box, at: r});
    });
    svg.querySelectorAll("g[id^='legend']").forEach(function (legend) {
      var area = rect(legend.getBoundingClientRect()), covered = 0, markers = 0;
      svg.querySelectorAll("g[id^='line2d'] use").forEach(function (marker) {
        if (marker.closest("g[id^='legend']") || marker.closest("g[id^='matplotlib.axis']")) return;
        markers += 1;
        if (overlaps(area, rect(marker.getBoundingClientRect()))) covered += 1;
      });
      out.legends.push({figure: index, kind: img.parentElement.className, markers: markers, covered: covered});
    });
    holder.innerHTML = "";
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  body.appendChild(pre);
});
</script>
"""


@pytest.fixture(scope="module")
def measured(chromium, page_path, tmp_path_factory):
    """What the probe script measured in Chromium on a copy of the page."""
    probe = page_path.with_name("probe.html")
    probe.write_text(page_path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(chromium, tmp_path_factory.mktemp("profile"), "--virtual-time-budget=20000", "--dump-dom",
                       probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_page_renders_to_a_non_blank_screenshot(chromium, page_path, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "page.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", page_path.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    ink = (pixels < 200).mean()
    assert 0.01 < ink < 0.6, f"{100 * ink:.2f}% of the screenshot is ink"


def test_no_figure_text_is_clipped_by_its_figure(measured):
    assert len(measured["figures"]) >= 60 + 1 + 1  # 60 histograms, a sweep, a trend
    clipped = measured["texts"]
    assert not clipped, f"{len(clipped)} text(s) outside their figure, e.g. {clipped[:3]}"


def test_legends_stay_off_the_data(measured):
    legends = [legend for legend in measured["legends"] if legend["markers"]]
    assert legends, "no legend found beside markers"
    assert any(legend["kind"] == "server" for legend in legends)  # the peak search's load figure is measured too
    covering = [legend for legend in legends if legend["covered"]]
    assert not covering, f"legends over data markers: {covering}"


def test_table_rows_have_bounded_height(measured):
    assert len(measured["rows"]) == 60 + 5  # 12 sweeps of 5 batch sizes, 5 points of the peak search
    tallest = max(measured["rows"])
    assert tallest <= ROW_HEIGHT_MAX_PX, f"a table row is {tallest:.0f} px tall"


def test_the_page_is_no_wider_than_the_window(measured):
    assert measured["overflow"] <= 0, f"the page is {measured['overflow']} px wider than the window"


def test_figures_use_the_width_of_the_page(measured):
    narrow = [figure for figure in measured["figures"]
              if figure["width"] < FIGURE_SHARE_MIN * measured["content"]]
    assert not narrow, (f"{len(narrow)} figure(s) narrower than {FIGURE_SHARE_MIN:.0%} of {measured['content']:.0f} "
                        f"px, e.g. {narrow[:3]}")


if __name__ == "__main__":  # python -m tests.test_browser install: what .ci/run calls before the tests
    import sys

    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m tests.test_browser install")
    problem = _install_chromium()
    print(problem or f"chromium: {_chromium_path()}")
    sys.exit(1 if problem else 0)
