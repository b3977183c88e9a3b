"""Every ```python block of README.md and docs/**/*.md runs.

What a block may assume (write documentation to this convention):

* The blocks of one page run in order, in one Python process and one namespace, as a reader pasting
  them one after the other would: a later block may use the names an earlier one defined. When a block
  fails, the page's later blocks are reported as not run (skipped), since they may depend on it.
* The working directory is a fresh temporary folder that holds links to the repository's
  ``checkpoints/``, ``configs/`` and ``examples/``: a block names shipped files by their path in the
  repository (``qidbm.load("checkpoints/dbm_mnist_binary.ckpt")``) and writes its outputs (grids,
  ``runs/``) into the temporary folder, never into the repository.
* Environment: ``QIDBM_DATA_DIR`` (the MNIST / Fashion-MNIST files: as set, else ``../shared/data``),
  ``QIDBM_FID_WEIGHTS`` (the Inception weights, when ``../shared/fid`` has them), ``QIDBM_CACHE_DIR``
  (a temporary cache), ``OMP_NUM_THREADS=1``, ``MPLBACKEND=Agg``. The repository root comes first on
  ``sys.path``, so its ``qidbm`` is the one imported.
* Blocks run at a tiny size (seconds each; a page has 15 minutes in all). A block that cannot (it needs a
  GPU, a download or hours) is fenced as ```python no-run: shown, never run. Other fences (bash, yaml)
  are not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINKED = ("checkpoints", "configs", "examples")
PAGE_TIMEOUT_S = 900
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` whose info string starts with ``python`` (``no-run`` among its words: not run)."""
    blocks, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, words, start = m["fence"], m["info"].split(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][len(m["indent"]):] if lines[i].startswith(m["indent"]) else lines[i])
            i += 1
        i += 1  # the closing fence
        if words and words[0].lower() in ("python", "py", "python3"):
            blocks.append(Block(page, start + 1, "\n".join(body) + "\n", "no-run" not in words[1:]))
    return blocks


BLOCKS = [b for page in PAGES if page.is_file() for b in python_blocks(page)]

# runs one page's blocks in order in one namespace; writes {line: {"ok": bool, "error": str}} as JSON
RUNNER = r"""
import json, sys, traceback
page, blocks_file, out_file = sys.argv[1], sys.argv[2], sys.argv[3]
blocks = json.load(open(blocks_file))
ns = {"__name__": "__main__"}
results = {}
for b in blocks:
    try:
        exec(compile(b["code"], f"{page}:{b['line']}", "exec"), ns)
        results[b["line"]] = {"ok": True}
    except BaseException:
        results[b["line"]] = {"ok": False, "error": traceback.format_exc(limit=-8)}
        json.dump(results, open(out_file, "w"))
        sys.exit(1)
    json.dump(results, open(out_file, "w"))  # after each block: a timeout still tells which ran
"""


def _environment(cache: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "QIDBM_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    shared = REPO.parent / "shared"
    if not os.environ.get("QIDBM_DATA_DIR") and (shared / "data").is_dir():
        env["QIDBM_DATA_DIR"] = str(shared / "data")
    weights = shared / "fid" / "pt_inception-2015-12-05-6726825d.pth"
    if not os.environ.get("QIDBM_FID_WEIGHTS") and weights.is_file():
        env["QIDBM_FID_WEIGHTS"] = str(weights)
    return env


@pytest.fixture(scope="module")
def page_results(tmp_path_factory):
    """``results(page)``: each block's outcome on that page (the page runs once, on first use)."""
    done: dict[Path, tuple[dict, str]] = {}

    def results(page: Path) -> tuple[dict, str]:
        if page not in done:
            work = tmp_path_factory.mktemp(re.sub(r"\W", "_", str(page.relative_to(REPO))))
            cwd = work / "cwd"
            cwd.mkdir()
            for name in LINKED:
                (cwd / name).symlink_to(REPO / name, target_is_directory=True)
            blocks = [{"line": b.line, "code": b.code} for b in BLOCKS if b.page == page and b.run]
            (work / "blocks.json").write_text(json.dumps(blocks))
            out = work / "results.json"
            try:
                r = subprocess.run([sys.executable, "-c", RUNNER, str(page.relative_to(REPO)), str(work / "blocks.json"),
                                    str(out)], cwd=cwd, env=_environment(work / "cache"), capture_output=True, text=True,
                                   timeout=PAGE_TIMEOUT_S)
                log = r.stdout[-2000:] + r.stderr[-4000:]
            except subprocess.TimeoutExpired:
                log = f"the page's blocks ran past {PAGE_TIMEOUT_S} s"
            done[page] = ({int(k): v for k, v in json.loads(out.read_text()).items()} if out.is_file() else {}, log)
        return done[page]

    return results


def test_the_pages_are_found():
    assert (REPO / "README.md").is_file() and any(b.page.name == "api.md" for b in BLOCKS)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.run] or [None], ids=lambda b: b.id if b else "none")
def test_python_block_runs(block, page_results):
    if block is None:
        pytest.skip("no ```python blocks in README.md or docs/")
    results, log = page_results(block.page)
    if block.line not in results:
        failed = [line for line, r in results.items() if not r["ok"]]
        if failed:
            pytest.skip(f"not run: the block at {block.page.relative_to(REPO)}:{failed[0]} failed first")
        pytest.fail(f"{block.id} did not finish (a crash or a timeout):\n{log}")
    assert results[block.line]["ok"], f"{block.id} failed:\n{results[block.line].get('error')}"


def test_the_block_parser_reads_fences_as_markdown_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n\n```bash\nls\n```\n  ```python no-run\n  y = 2\n  ```\n"
                    "````python\n```\nnot a fence end\n```\nz = 3\n````\n")
    blocks = python_blocks(page)
    assert [(b.line, b.code, b.run) for b in blocks] == [
        (2, "x = 1\n", True), (9, "y = 2\n", False), (12, "```\nnot a fence end\n```\nz = 3\n", True)]
