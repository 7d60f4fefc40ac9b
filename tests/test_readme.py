"""The README's "Your own model" example runs as printed (issue 17: a transformer and a CNN
through every analysis)."""

import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_python_block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_your_own_model_example_runs_every_analysis(capsys):
    code = _first_python_block_after("## Your own model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README.md (Your own model)", "exec"), {"__name__": "readme_example"})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["TinyViT", "Sequential"]
    for line in lines:
        assert "sparsity 0.50" in line and "nan" not in line.lower()
    # the one skipped weight (the positional embedding) is named, never dropped silently
    assert any("pos" in str(w.message) for w in caught)
