"""Exercises that check themselves, shipped inside the package (after Kaggle's learntools).

In a notebook::

    from toolkit import exercises
    ex = exercises.load("01")          # the notebook's exercises, as attributes
    ex.ntk_entry.hint()                # hint 1; call again for hint 2, ...
    ex.ntk_entry.check(answer, model=net, x=x)   # correct / incorrect (with a reason) / not attempted
    ex.ntk_entry.solution()

Four kinds (``toolkit/exercises/_core.py``):

- :class:`ValueExercise`: a value to compute; ``expected(**context)`` computes the right one from
  what the notebook passes to ``check``; tolerance ``rtol``/``atol``; ``diagnoses`` turn typical
  mistakes into specific reasons ("your kernel is not symmetric", "off by the factor 2/N").
- :class:`FunctionExercise`: a function to write, run on hidden cases (edge cases included) and
  compared with ``reference``.
- :class:`PredictionExercise`: commit to one of ``choices`` before an experiment;
  ``outcome(**context)`` reads what the experiment did.
- :class:`ThoughtExercise`: a free-text question with a model answer; ``check()`` says it has no
  automatic check (status ``"thought"``).

``check`` returns a :class:`Result` (``.status`` in ``"correct"``, ``"incorrect"``,
``"not attempted"``, ``"thought"``; ``.reason``), shows it as one line
``EXERCISE 01.ntk_entry: correct — ...`` and records it in :func:`results`. An answer left as the
starter, ``...`` or ``None`` (or a function that raises ``NotImplementedError`` or returns ``...``)
is *not attempted*, never an error, so a student notebook runs top to bottom untouched.

Adding an exercise (README)
---------------------------
1. In ``toolkit/exercises/nbNN.py`` (NN = the notebook's number; create it with an ``__all__``),
   define the exercise as a module-level name; ``load("NN")`` collects every module-level exercise
   in definition order and names it after its variable::

       ntk_entry = ValueExercise(
           section="1",
           prompt="Compute Θ(x₀, x₁) of the width-64 net from its parameter gradients.",
           expected=lambda model, x: ntk.empirical_ntk(model, x)[0, 1],
           rtol=1e-4,
           diagnoses=[(lambda a, e, ctx: ..., "off by the factor 1/n: ...")],
           hints=["Θ(x, x') = ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩", "torch.autograd.grad ... "],
           solution="answer = ...",            # code; runs on example()'s context in the tests
           example=lambda: {"model": ..., "x": ...},   # small and fast
           wrong=[("answer = 2 * ...", "factor")],     # typical mistakes and their reasons
       )

2. In the notebook, right after the section it belongs to, add visible cells: a markdown prompt;
   a code cell with the solution between the markers, and the starter the student sees::

       ### BEGIN SOLUTION
       answer = ...the instructor's code...
       ### END SOLUTION
       ### STARTER answer = ...  # Θ(x₀, x₁), a number

   (several ``### STARTER`` lines make a multi-line starter; the text after ``### STARTER `` is
   kept as it is, indentation included); then a cell ``ex.ntk_entry.check(answer, model=net, x=x)``.
   Keep checks cheap: the notebook's toy preset must stay within 30 s.
3. ``make student`` writes the student edition, ``build/student/NN_name.ipynb``: every solution
   block replaced by its starter, outputs cleared (:mod:`toolkit.exercises.editions`).
4. ``tests/test_exercises.py`` picks the exercise up automatically: the solution must be correct,
   the starter not attempted and each ``wrong`` answer incorrect with its reason, on
   ``example()``; the instructor notebook must report it correct and the student notebook not
   attempted.
"""

from ._core import (
    RESULT_LINE,
    STATUSES,
    Diagnosis,
    Exercise,
    ExerciseSet,
    FunctionExercise,
    PredictionExercise,
    Result,
    ThoughtExercise,
    ValueExercise,
    clear_results,
    is_not_attempted,
    load,
    registered,
    results,
)

__all__ = ["load", "registered", "results", "clear_results", "Result", "Exercise",
           "ValueExercise", "FunctionExercise", "PredictionExercise", "ThoughtExercise",
           "ExerciseSet", "Diagnosis", "is_not_attempted", "STATUSES", "RESULT_LINE"]
