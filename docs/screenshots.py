"""Look at the built site as a reader would: render its main pages in headless Chromium, save a screenshot of
each, and check from the rendered DOM that math was typeset (MathJax served from the site itself, no network),
that the tutorials' figures are on their pages and load, and that the navigation sidebar is there.

    python -m sphinx -W --keep-going -b html docs docs/_build/html     # build first
    python docs/screenshots.py [--html docs/_build/html] [--out docs/_build/screenshots]

Needs Debian's chromium (`apt-get install chromium`). Exits 1, naming the page and what is missing, when a check
fails; prints one line per page otherwise.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# page -> (must have typeset math, minimum number of figures)
PAGES = {
    "index.html": (False, 0),
    "getting_started.html": (False, 0),
    "guide/guides_elbos.html": (True, 0),
    "guide/evaluation.html": (False, 0),
    "tutorials/gmm_em_svi_nuts.html": (True, 3),
    "tutorials/own_model_cli.html": (True, 1),
    "tutorials/vae_mnist.html": (True, 2),
    "tutorials/topics_reuters.html": (True, 1),
    "tutorials/evidence_schools.html": (True, 1),
    "api/index.html": (False, 0),
    "api/ppvae.infer.svi.html": (False, 0),
    "performance.html": (False, 0),
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--allow-file-access-from-files"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("screenshots.py: chromium not found; install it with `apt-get install chromium`")


def render(browser: str, url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                              text=True, timeout=180)


def check(page: Path, dom: str, needs_math: bool, min_figures: int) -> list[str]:
    problems = []
    if needs_math and "<mjx-container" not in dom:
        problems.append("no typeset math (MathJax did not run)")
    if re.search(r"\$\$|\\\(|\\\[", re.sub(r"<(script|pre|code)[^>]*>.*?</\1>", "", dom, flags=re.S)):
        problems.append("untypeset TeX delimiters left in the text")
    images = re.findall(r'<img[^>]*src="([^"]+)"', dom)
    figures = [src for src in images if src.endswith(".png") or src.startswith("data:image/png")]
    if len(figures) < min_figures:
        problems.append(f"{len(figures)} figures, expected at least {min_figures}")
    for src in figures:
        if not src.startswith("data:") and not (page.parent / src.split("#")[0]).is_file():
            problems.append(f"figure {src} does not exist")
    if 'class="sidebar-tree"' not in dom:
        problems.append("no navigation sidebar")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html", type=Path, default=DOCS / "_build" / "html")
    parser.add_argument("--out", type=Path, default=DOCS / "_build" / "screenshots")
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name, (needs_math, min_figures) in PAGES.items():
        page = (args.html / name).resolve()
        if not page.is_file():
            print(f"{name}: not built")
            failed = True
            continue
        url = page.as_uri()
        dom = render(browser, url, "--dump-dom").stdout
        shot = args.out / (name.replace("/", "_").removesuffix(".html") + ".png")
        render(browser, url, f"--screenshot={shot}", f"--window-size=1280,{args.height}")
        problems = check(page, dom, needs_math, min_figures)
        if not shot.is_file():
            problems.append("no screenshot written")
        failed |= bool(problems)
        print(f"{name}: {'; '.join(problems) if problems else 'ok'} -> {shot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
