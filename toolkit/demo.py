"""Deprecated name of :mod:`toolkit.run_notebooks` (the notebook runner), kept for one release:
``python -m toolkit.demo`` still runs it, with a DeprecationWarning."""

import sys
import warnings

from ._deprecated import warn_renamed
from .run_notebooks import NOTEBOOK_DIR, NotebookResult, count_self_checks, format_table, main, run_notebook

__all__ = ["NOTEBOOK_DIR", "NotebookResult", "run_notebook", "count_self_checks", "format_table",
           "main"]

if __name__ == "__main__":
    # stacklevel 1: attributed to __main__, so the default warning filters show it
    warnings.warn("python -m toolkit.demo is deprecated and will be removed in the next release; "
                  "use python -m toolkit.run_notebooks.", DeprecationWarning, stacklevel=1)
    sys.exit(main())
else:
    warn_renamed("toolkit.demo", "toolkit.run_notebooks")
