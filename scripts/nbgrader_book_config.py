"""The book's nbgrader settings: load them from a course's own nbgrader_config.py.

    c = get_config()  # noqa: F821
    load_subconfig("/path/to/the/book/scripts/nbgrader_book_config.py")  # noqa: F821

The chapters carry nbgrader's cell metadata (scripts/nbgrader_metadata.py): each exercise's answer
cell is a solution cell, each check cell an autograded test cell worth POINTS. nbgrader alone can
already grade a chapter with that (the checks raise under nbgrader when they fail, see
attention_book.exercises.CheckFailed). These settings make the released notebook what the student
edition is:

- nbgrader replaces a solution cell without `### BEGIN SOLUTION` markers entirely with its stub
  (`# YOUR CODE HERE` / `raise NotImplementedError()`), which would drop the signature and the
  docstring the exercise gives. `KeepStarters` gives such a cell the book's own starter instead
  (scripts/exercises_layout.py's blank_answer, as make student does: a starter stays as it is, a
  committed answer keeps its signatures); a cell with markers is cleared as nbgrader always does.
- Every other cell of a released notebook is read-only (`LockCells.lock_all_cells`): the chapter's
  text and code are the assignment, only the answer cells are the student's (who can still add
  cells of their own). Test cells are locked by nbgrader anyway, and autograde puts their source
  back as released.
- A cell may run for up to 5 minutes under autograde (nbgrader's default, 30 s, is shorter than
  some chapters' training cells).
"""

import sys
from pathlib import Path

from nbgrader import utils as _nbgrader_utils
from nbgrader.converters import GenerateAssignment as _GenerateAssignment
from nbgrader.preprocessors import ClearSolutions as _ClearSolutions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercises_layout import blank_answer as _blank_answer  # noqa: E402


class KeepStarters(_ClearSolutions):
    """ClearSolutions that gives an unmarked solution code cell the book's starter, not a blank."""

    def preprocess_cell(self, cell, resources, cell_index):
        if (
            cell.cell_type == "code"
            and _nbgrader_utils.is_solution(cell)
            and self.begin_solution_delimeter not in cell.source
        ):
            cell.source = _blank_answer(cell.source)
            return cell, resources
        return super().preprocess_cell(cell, resources, cell_index)


_defaults = _GenerateAssignment.class_traits()["preprocessors"].default()
if _ClearSolutions not in _defaults:
    raise RuntimeError(
        "nbgrader's generate_assignment no longer runs ClearSolutions: update KeepStarters"
    )

c = get_config()  # noqa: F821 -- traitlets config files get get_config from their loader
c.GenerateAssignment.preprocessors = [
    KeepStarters if pp is _ClearSolutions else pp for pp in _defaults
]
c.LockCells.lock_all_cells = True
c.Execute.timeout = 300
