"""Every code block of README.md and docs/*.md runs, so the documentation cannot drift.

* ```python blocks run as scripts, each in a temporary directory.
* ```bash blocks run in a temporary directory (holding links to the repository's examples/ and
  bench/, as if run from the repository root) under ``set -euo pipefail``, with this Python's
  bin/ first on PATH and a timeout. Every process a block starts must be gone when it ends and no
  shmopt segment made by it may remain in /dev/shm.
* ```text blocks are output or diagrams and never run; any other language (or none) fails.

A block that cannot run as written on one CPU machine has a marker comment on the line before:

* ``<!-- docs-test: ci -->``: set-up commands (they install). Not run here: the test checks that
  .ci/run runs exactly these commands, in this order (pip's ``-q`` aside), since CI runs them.
* ``<!-- docs-test: cuda -->``: needs a CUDA device. Run where one is visible, else skipped with
  that reason (a skip, never a pass).
* ``<!-- docs-test: slow -->``: a block that fetches data and trains a real workload (10-20 s):
  run with pytest's ``slow`` marker (``python -m pytest -m slow``, which CI runs too), so that the
  default run stays under its time budget.

Development notes: docs/development.md.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest

from shmopt.memory.shm import list_segments, owner_pid

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
MARKERS = ("ci", "cuda", "slow")
BLOCK = re.compile(r"(?:<!-- docs-test: (?P<marker>[a-z-]+) -->\n)?^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```$",
                   re.S | re.M)
BLOCK_TIMEOUT_S = 60


def _blocks():
    out = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("lang")) + 1
            out.append((path.relative_to(ROOT).as_posix(), line, m["lang"].strip(), m["marker"], m["body"]))
    return out


BLOCKS = _blocks()
RUN = [pytest.param(*b, id=f"{b[0]}:{b[1]}", marks=[pytest.mark.slow] if b[3] == "slow" else [])
       for b in BLOCKS if b[2] in ("python", "bash") and b[3] != "ci"]


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _new_segments(before: set[str], session: int) -> list[str]:
    """Segments made since ``before`` whose owner is dead or still in the block's session."""
    left = []
    for name in set(list_segments()) - before:
        pid = owner_pid(name)
        try:
            if os.getsid(pid) == session:
                left.append(name)
        except (ProcessLookupError, PermissionError):
            left.append(name)      # owner gone and the segment still there: leaked
    return left


def _session_procs(session: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != session and os.getsid(p.pid) == session and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return out


def _run(argv: list[str], cwd: pathlib.Path, label: str) -> None:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONUNBUFFERED="1")
    before = set(list_segments())
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{label} ran past {BLOCK_TIMEOUT_S} s:\n{out[-3000:]}")
    deadline = time.monotonic() + 5          # forkservers and resource trackers leave with their owner
    while (left := _session_procs(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in left:
        p.kill()
    segments = _new_segments(before, proc.pid)
    assert proc.returncode == 0, f"{label} exited {proc.returncode}:\n{out[-3000:]}"
    assert not left, f"{label} left processes running: {[p.cmdline() for p in left]}"
    assert not segments, f"{label} left shared-memory segments: {segments}"


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("path,line,lang,marker,body", RUN)
def test_block_runs(path, line, lang, marker, body, tmp_path):
    if marker == "cuda" and not _cuda():
        pytest.skip("needs a CUDA device; none is visible here")
    for name in ("examples", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    if lang == "python":
        (tmp_path / "block.py").write_text(body)
        _run([sys.executable, "block.py"], tmp_path, f"{path}:{line}")
    else:
        (tmp_path / "block.sh").write_text("set -euo pipefail\n" + body)
        _run(["bash", "block.sh"], tmp_path, f"{path}:{line}")


def test_every_block_is_python_bash_or_text_with_known_markers():
    assert any(b[0] == "README.md" and b[2] == "python" for b in BLOCKS)
    bad = [f"{p}:{n} ```{lang}" for p, n, lang, _, _ in BLOCKS if lang not in ("python", "bash", "text")]
    assert not bad, "label each block python, bash or text: " + ", ".join(bad)
    unknown = [f"{p}:{n} {m}" for p, n, _, m, _ in BLOCKS if m is not None and m not in MARKERS]
    assert not unknown, unknown
    text_markers = [f"{p}:{n}" for p, n, lang, m, _ in BLOCKS if m and lang != "bash"]
    assert not text_markers, f"markers belong to bash blocks: {text_markers}"
    loose = [f"{f.name}: {m}" for f in FILES for m in re.findall(r"<!-- docs-test:[^>]*-->\n(?!```)",
                                                                  f.read_text(encoding="utf-8"))]
    assert not loose, f"a marker must be on the line just before a block: {loose}"


def _commands(text: str) -> list[list[str]]:
    lines = [ln.strip() for ln in text.splitlines()]
    return [shlex.split(ln, comments=True) for ln in lines if ln and not ln.startswith("#")]


def test_ci_block_is_what_ci_runs():
    ci_blocks = [b for b in BLOCKS if b[3] == "ci"]
    assert [b[0] for b in ci_blocks] == ["README.md"], "one set-up block, in README.md"
    wanted = [c for c in _commands(ci_blocks[0][4]) if c]
    script = [c for c in _commands((ROOT / ".ci" / "run").read_text()) if c]

    def same(doc, ci):
        return ci == doc or (ci[:4] == ["python", "-m", "pip", "install"]
                             and [t for i, t in enumerate(ci) if not (t == "-q" and i == 4)] == doc)
    found = []
    for doc in wanted:
        hits = [i for i, ci in enumerate(script) if same(doc, ci)]
        assert hits, f".ci/run does not run {shlex.join(doc)!r}"
        found.append(hits[0])
    assert found == sorted(found), ".ci/run runs the set-up commands in another order"


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_links_and_anchors_resolve():
    broken = []
    for f in FILES:
        text = re.sub(r"^```.*?^```$", "", f.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (f.parent / file).resolve() if file else f
            if not dest.exists() or ROOT not in dest.parents:
                broken.append(f"{f.name}: {target}")
            elif anchor and dest.suffix == ".md":
                heads = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```$", "", dest.read_text(encoding="utf-8"),
                                                        flags=re.S | re.M), flags=re.M)
                if anchor not in {_slug(h) for h in heads}:
                    broken.append(f"{f.name}: {target} (no such heading)")
    assert not broken, broken


def test_front_door_is_short_and_the_pages_stand_alone():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
    pages = FILES + sorted((ROOT / "examples").glob("*.md"))
    outside = []                      # any ../path, in a link or in the text, must stay inside
    for p in pages:
        for rel in re.findall(r"(?:\.\./)+[\w.-]+", p.read_text(encoding="utf-8")):
            if ROOT.resolve() not in (p.parent / rel).resolve().parents:
                outside.append(f"{p.name}: {rel}")
    assert not outside, f"names a file outside the repository: {outside}"
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    missing = [f.name for f in FILES[1:] if f.name != "index.md" and f"({f.name})" not in index]
    assert not missing, f"docs/index.md does not list {missing}"


def test_bench_markers_are_tables_the_report_writes():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from report import TABLES
    finally:
        sys.path.remove(str(ROOT / "bench"))
    opened, closed = [], []
    for f in FILES:
        text = f.read_text(encoding="utf-8")
        opened += re.findall(r"^<!-- bench:(\w+) -->$", text, flags=re.M)
        closed += re.findall(r"^<!-- /bench:(\w+) -->$", text, flags=re.M)
    assert sorted(opened) == sorted(closed) and len(set(opened)) == len(opened)
    assert set(opened) <= set(TABLES), set(opened) - set(TABLES)
