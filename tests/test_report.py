"""The HTML report, opened in a real headless browser (Debian's chromium): every image loads, sections exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from anomaly_clustering.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken', broken.join('|'));
});
</script></body>"""


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    assert main(["example", str(root / "ex"), "--per_kind", "5", "--n_good", "5", "--size", "96"]) == 0
    run = root / "run"
    assert main(["fit", "--data", str(root / "ex" / "test"), "--localizer", "color-stats", "--classifier", "average", "--input_size", "64",
                 "--n_clusters", "auto", "--k_max", "5", "--run", str(run), "--quiet", "true"]) == 0
    assert main(["report", "--run", str(run)]) == 0
    return run / "report" / "index.html"


def test_report_has_sections_and_files(report_page: Path) -> None:
    html = report_page.read_text()
    for section in ("summary", "metrics", "confusion", "embedding-map", "k-selection", "clusters"):
        assert f"id='{section}'" in html, section
    srcs = re.findall(r"<img src='([^']+)'", html)
    assert len(srcs) >= 2 * 20  # image + map thumbnail for each of the 20 images
    missing = [s for s in srcs if not (report_page.parent / s).is_file()]
    assert not missing, missing[:5]
    assert "most typical" in html and "least typical" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_in_headless_browser(report_page: Path, tmp_path: Path) -> None:
    probe = report_page.parent / "_probe.html"
    probe.write_text(report_page.read_text().replace("</body>", CHECK_SCRIPT))
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    count = re.search(r'data-images="(\d+)"', dom)
    assert count is not None, "the page's load handler never ran"
    assert int(count.group(1)) >= 40
    broken = re.search(r'data-broken="([^"]*)"', dom).group(1)
    assert broken == "", f"images failed to load: {broken[:300]}"
    for section in ("summary", "metrics", "confusion", "embedding-map", "clusters"):
        assert f'id="{section}"' in dom
    shot = report_page.parent / "screenshot.png"
    subprocess.run([*common, "--window-size=1280,1600", f"--screenshot={shot}", report_page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
