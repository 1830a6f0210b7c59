"""The documentation site as a reader meets it: built with `mkdocs build --strict`, opened
in a real headless Chromium (Debian's), searched, and its API reference held to the
public names. `tox -e docs` runs these (marker `docs`); they fail, never skip, where
Chromium or MkDocs is missing."""

from __future__ import annotations

import functools
import html
import http.server
import inspect
import re
import shutil
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Request, sync_playwright

import inference_core
import inference_core.testing

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
# Chromium as root, on a machine whose network reaches nothing: no sandbox (root has
# none to give), and none of its own calls home, which would fail and log errors.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def build(source: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the project (or a copy of it) at `source`."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("site")
    result = build(ROOT, built)
    assert result.returncode == 0, result.stderr
    return built


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    """The site served over HTTP, as a reader's browser gets it (search runs in a web
    worker, which a file: URL does not allow)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """Keeps the server's access log out of the test output."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no Chromium: apt install chromium (Debian's package)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def pages_of(site: Path) -> list[str]:
    """Every page of the site, as a path below its root."""
    below = [page.parent.relative_to(site) for page in site.rglob("index.html")]
    return sorted(f"{path}/" if path.parts else "" for path in below)


def test_the_site_covers_every_guide_and_the_reference(site: Path) -> None:
    pages = pages_of(site)
    for wanted in ("getting-started/", "guides/generation/", "guides/gpus/", "performance/"):
        assert wanted in pages
    assert [p for p in pages if p.startswith("reference/")], pages


def test_every_page_loads_without_console_errors(
    browser: Browser, site: Path, base_url: str
) -> None:
    page = browser.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def failed(request: Request) -> None:
        problems.append(f"request failed: {request.url} ({request.failure})")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on("requestfailed", failed)
    visited = 0
    for path in pages_of(site):
        # networkidle: what the page fetches after `load` (its icon) counts as well
        response = page.goto(base_url + path, wait_until="networkidle")
        assert response is not None and response.ok, path
        assert page.locator("article h1").count() >= 1, f"{path} has no title"
        assert not problems, f"{path}: {problems}"
        visited += 1
    assert visited >= 20


def test_the_search_finds_the_quick_start_for_load(browser: Browser, base_url: str) -> None:
    page = browser.new_page()
    page.goto(base_url, wait_until="load")
    page.click(".md-search__input")
    page.fill(".md-search__input", "load")
    page.wait_for_selector(".md-search-result__item", timeout=30_000)
    links = ".md-search-result__item a"
    found = page.eval_on_selector_all(links, "links => links.map(a => a.href)")
    first = [href.split("?")[0] + "#" + href.partition("#")[2] for href in found[:8]]
    assert base_url + "getting-started/#quick-start" in first, found


def test_every_list_and_table_renders(site: Path) -> None:
    """Python-Markdown, unlike GitHub, reads a list right after a paragraph, or an item
    after a block indented less than four spaces, as more of the paragraph: a line that
    begins an item or a table row inside a rendered paragraph is such a slip."""
    slips = []
    for page in site.rglob("index.html"):
        for paragraph in re.findall(r"<p>(.*?)</p>", page.read_text(), re.S):
            lines = html.unescape(re.sub(r"<[^>]+>", "", paragraph)).split("\n")
            slips += [
                f"{page.parent.relative_to(site)}: {line.strip()[:60]}"
                for line in lines[1:]
                if re.match(r"\s*(- |\d+\. |\|.*\|)", line)
            ]
    assert not slips, slips


def _inventory(site: Path) -> dict[str, str]:
    """objects.inv, which mkdocstrings writes: each documented name and its page."""
    raw = (site / "objects.inv").read_bytes()
    _, _, packed = raw.partition(b"zlib.\n")
    entries = {}
    for line in zlib.decompress(packed).decode().splitlines():
        name, _role, _priority, location, *_ = line.split(" ")
        entries[name] = location.split("#")[0]
    return entries


def _words(markup: str) -> str:
    """What a reader sees of some HTML: its text, with runs of white space as one."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def _own_summary(thing: object) -> str | None:
    """The first line of the docstring a class or function of ours was written with."""
    if not (inspect.isclass(thing) or inspect.isfunction(thing)):
        return None  # a type alias or a marker instance has no docstring of its own
    if not getattr(thing, "__module__", "").startswith("inference_core"):
        return None
    doc = inspect.getdoc(thing)
    return doc.splitlines()[0] if doc else None


@pytest.mark.parametrize(
    "module", [inference_core, inference_core.testing], ids=lambda m: m.__name__
)
def test_every_public_name_has_a_reference_entry_with_its_docstring(
    site: Path, module: ModuleType
) -> None:
    entries = _inventory(site)
    names: list[str] = module.__all__
    prefix = module.__name__
    missing = [name for name in names if f"{prefix}.{name}" not in entries]
    assert not missing, f"no reference entry for {missing}"
    for name in names:
        summary = _own_summary(getattr(module, name))
        page = _words((site / entries[f"{prefix}.{name}"] / "index.html").read_text())
        assert summary is None or _words(summary.replace("`", "")) in page, name
    assert sum(_own_summary(getattr(module, name)) is not None for name in names) >= 4


def test_a_broken_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(ROOT / "examples", copy / "examples")
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [asyncio](guides/asyncio.md#no-such-part).\n")
    result = build(copy, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-part" in result.stderr
