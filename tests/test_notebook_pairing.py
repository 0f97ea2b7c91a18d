"""Every chapter notebook and its MyST Markdown twin hold the same cells.

Each chapter is two files (chapters/jupytext.toml): NN_topic.ipynb, the notebook with its
committed outputs, and NN_topic.md, the same cells as text. Reviewers read the .md; readers and
nbval run the .ipynb; so the two must agree on every cell's type, source and tags. The
notebooks must also hold the outputs of one top-to-bottom run, since nbval compares against them.

`jupytext --diff` exits 0 even when the files differ, hence this test.
"""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path

import jupytext
import pytest
from _optional import missing, needs

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"

# Cells that a notebook may leave unexecuted on purpose (nbval does not run them either).
NOT_RUN_TAGS = {"nbval-skip", "skip-execution"}

HOW_TO_FIX = """\
How to bring the pair back in step:
  * you edited the .md:    jupytext --to ipynb --update {md}
                           then re-execute the notebook (Restart Kernel and Run All Cells in
                           JupyterLab, or: jupyter nbconvert --to notebook --execute --inplace {nb})
                           so that its committed outputs match its cells again;
  * you edited the .ipynb: save it in JupyterLab (jupytext writes the .md on every save),
                           or: jupytext --to md:myst {nb}
Careful with `jupytext --sync`: it trusts modification times, and right after a git clone or an
`nbconvert --inplace` the .ipynb is the newer file, so its inputs overwrite your .md edits."""


def _found(pattern: str) -> list[Path]:
    """Files under chapters/, skipping hidden folders (.ipynb_checkpoints) and _build."""
    return sorted(
        p
        for p in CHAPTERS.rglob(pattern)
        if not any(part.startswith((".", "_build")) for part in p.relative_to(CHAPTERS).parts)
    )


NOTEBOOKS = _found("*.ipynb")
TWINS = _found("*.md")
PAIRS = [nb for nb in NOTEBOOKS if nb.with_suffix(".md").exists()]
NO_CHAPTERS = "no chapter notebooks in chapters/ yet: there is no pair to check"


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def params(paths: list[Path]):
    if not paths:
        return [pytest.param(None, marks=needs(False, NO_CHAPTERS))]
    return [pytest.param(p, id=rel(p)) for p in paths]


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def source(cell) -> str:
    # jupytext does not keep trailing blank lines or trailing spaces at the end of a cell
    return cell.source.rstrip()


def first_line(cell) -> str:
    return repr((source(cell).splitlines() or [""])[0])


def first_difference(nb_cells, md_cells) -> str | None:
    """Describe the first cell where the two notebooks disagree, or None when they agree."""
    for i, (a, b) in enumerate(zip(nb_cells, md_cells, strict=False)):
        where = f"cell {i} ({a.cell_type} cell starting {first_line(a)})"
        if a.cell_type != b.cell_type:
            return f"{where}: it is a {a.cell_type} cell in the .ipynb, a {b.cell_type} cell in the .md"
        if source(a) != source(b):
            diff = difflib.unified_diff(
                source(a).splitlines(), source(b).splitlines(), ".ipynb", ".md", lineterm="", n=1
            )
            return f"{where}: the source differs\n    " + "\n    ".join(list(diff)[:20])
        if tags(a) != tags(b):
            return f"{where}: the tags differ: .ipynb {tags(a)}, .md {tags(b)}"
    if len(nb_cells) != len(md_cells):
        n = min(len(nb_cells), len(md_cells))
        extra = (nb_cells if len(nb_cells) > n else md_cells)[n]
        return (
            f"cell {n}: the .ipynb has {len(nb_cells)} cells, the .md {len(md_cells)}; the first "
            f"extra one starts {first_line(extra)}"
        )
    return None


def test_every_notebook_has_a_twin():
    if not NOTEBOOKS and not TWINS:
        missing(NO_CHAPTERS)
    lonely_nb = [rel(nb) for nb in NOTEBOOKS if not nb.with_suffix(".md").exists()]
    lonely_md = [rel(md) for md in TWINS if not md.with_suffix(".ipynb").exists()]
    problems = []
    if lonely_nb:
        problems.append(
            "notebooks without a .md twin (make one: jupytext --to md:myst NOTEBOOK):\n  "
            + "\n  ".join(lonely_nb)
        )
    if lonely_md:
        problems.append(
            ".md files without a notebook (every .md under chapters/ is a jupytext twin; make "
            "the notebook with jupytext --to ipynb FILE.md, then execute it):\n  "
            + "\n  ".join(lonely_md)
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.parametrize("notebook", params(PAIRS))
def test_pair_holds_the_same_cells(notebook: Path):
    twin = notebook.with_suffix(".md")
    nb = jupytext.read(notebook)
    md = jupytext.read(twin)
    difference = first_difference(nb.cells, md.cells)
    if difference is not None:
        pytest.fail(
            f"{rel(notebook)} and {rel(twin)} are out of step at {difference}\n\n"
            + HOW_TO_FIX.format(nb=rel(notebook), md=rel(twin)),
            pytrace=False,
        )


@pytest.mark.parametrize("notebook", params(NOTEBOOKS))
def test_notebook_holds_the_outputs_of_one_run(notebook: Path):
    nb = jupytext.read(notebook)
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not source(cell) or NOT_RUN_TAGS & set(tags(cell)):
            continue
        count = cell.get("execution_count")
        if count is None:
            pytest.fail(
                f"{rel(notebook)}: cell {i} (starting {first_line(cell)}) has not been "
                "executed. The outputs are committed and nbval compares against them: re-execute "
                "the notebook from the top (jupyter nbconvert --to notebook --execute --inplace "
                f"{rel(notebook)}), or tag the cell nbval-skip if it must not run.",
                pytrace=False,
            )
        counts.append((count, i))
    out_of_order = [(a, b) for a, b in pairwise(counts) if b[0] <= a[0]]
    if out_of_order:
        (_, earlier), (_, later) = out_of_order[0]
        pytest.fail(
            f"{rel(notebook)}: cell {later} ran before cell {earlier} (their execution counts "
            "go down). Commit the outputs of one top-to-bottom run: Restart Kernel and Run All "
            f"Cells, or jupyter nbconvert --to notebook --execute --inplace {rel(notebook)}.",
            pytrace=False,
        )
