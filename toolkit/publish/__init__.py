"""Published forms of the notebooks: a static book (``make book``) and Voilà apps (``make app``).

- :mod:`toolkit.publish.book` assembles the executed notebooks (cached: an unchanged notebook on an
  unchanged package is not re-run), the README's introduction, a table of contents per topic and
  the papers list into a Jupyter Book 1 (Sphinx) project and builds it to static HTML, offline:
  MathJax is served from the book itself and panels show their static figure.
- :mod:`toolkit.publish.app` turns a notebook into a Voilà app: the same cells run, only the
  explorer panels (and the notebook's title) are shown, code hidden.

Tooling, not analysis: nothing in the analysis or presentation layers imports this package.
"""

from .app import app_notebook, find_notebook, panel_cells, write_app
from .book import TOPICS, assemble_book, papers_by_notebook

__all__ = ["app_notebook", "find_notebook", "panel_cells", "write_app", "TOPICS", "assemble_book",
           "papers_by_notebook"]
