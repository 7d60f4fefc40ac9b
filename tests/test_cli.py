"""The command line: help, a train + analyze round trip, resume, the analysis registry, errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from toolkit import cli, train

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--experiment", "tour", "--preset", "toy", "--device", "cpu", "--no-progress"]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``cli.main(args)`` in this process: (exit status, stdout, stderr); argparse exits too."""
    try:
        code = cli.main(args)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_help_documents_every_option(capsys):
    parser = cli.build_parser()
    commands = dict(_subparsers(parser))
    assert {"train", "analyze", "analyze eval", "presets"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"`{name} {action.option_strings[0]}` has no help text"
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    for option in ("--experiment", "--preset", "--device", "--seed", "--out", "--no-resume",
                   "--epochs", "--compile", "--amp"):
        assert option in out


def test_module_entry_point_and_errors_without_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True,
                        text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "train" in ok.stdout and "analyze" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "toolkit", "analyze", "eval", "--checkpoint",
                          str(tmp_path / "missing")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2
    assert "No checkpoint at" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args,message", [
    (TRAIN[:2] + ["nope"], "Unknown experiment 'nope'; valid experiments: ["),
    (["train", "--experiment", "tour", "--preset", "huge"], "valid presets: ["),
    (["train", "--experiment", "tour", "--epochs", "-1"], "non-negative integer"),
    (["train", "--experiment", "tour", "--device", "tpu"], "device='tpu'"),
    (["analyze", "eval", "--checkpoint", "/nonexistent/run"], "No checkpoint at /nonexistent/run"),
    (["analyze", "nope", "--checkpoint", "x"], "invalid choice: 'nope'"),
    (["analyze"], "required: KIND"),
    ([], "required: COMMAND"),
])
def test_clear_errors_exit_2(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_train_then_analyze_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(TRAIN + ["--epochs", "2", "--out", str(out)], capsys)
    assert code == 0
    assert stdout.startswith("train tour/toy seed 0: 2 epochs") and str(out) in stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.csv", "run.json"]
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["fit"]["epochs"] == 2
    assert info["model"] == {"name": "mlp", "kwargs": {"in_dim": 64, "widths": [128],
                                                       "out_dim": 10}}

    # analyze rebuilds the model and the data from run.json: it must reproduce training's numbers
    code, stdout, _ = run_cli(["analyze", "eval", "--checkpoint", str(out / "checkpoint.pt")],
                              capsys)
    assert code == 0 and stdout.startswith("analyze eval of tour/toy")
    result = json.loads((out / "eval.json").read_text())
    last = history.iloc[-1]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert result[key] == pytest.approx(last[key], rel=1e-6)
    assert result["checkpoint_epoch"] == 2
    # and the loaded model is the checkpoint's
    run = cli.load_run(out)
    ckpt = train.load_checkpoint(out / "checkpoint.pt")
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])


def test_restart_with_more_epochs_resumes_bit_identically(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(TRAIN + ["--epochs", "0", "--out", str(a)], capsys)[0] == 0  # initialisation
    assert train.load_checkpoint(a / "checkpoint.pt")["epoch"] == 0
    assert run_cli(TRAIN + ["--epochs", "1", "--out", str(a)], capsys)[0] == 0
    assert run_cli(TRAIN + ["--epochs", "3", "--out", str(a)], capsys)[0] == 0
    assert run_cli(TRAIN + ["--epochs", "3", "--out", str(b)], capsys)[0] == 0
    ca, cb = (train.load_checkpoint(p / "checkpoint.pt") for p in (a, b))
    assert ca["epoch"] == cb["epoch"] == 3
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k])
    assert pd.read_csv(a / "history.csv")["epoch"].tolist() == [0, 1, 2, 3]
    # changing a setting the checkpoint depends on is refused with the way out, and the run's
    # record is left as it was
    code, _, err = run_cli(TRAIN + ["--epochs", "3", "--lr", "0.3", "--out", str(a)], capsys)
    assert code == 2 and "other settings" in err and "--no-resume" in err
    assert json.loads((a / "run.json").read_text())["fit"]["lr"] == 0.05
    assert run_cli(TRAIN + ["--epochs", "1", "--lr", "0.3", "--no-resume", "--out", str(a)],
                   capsys)[0] == 0


def test_an_analysis_kind_is_a_few_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "ANALYSES", dict(cli.ANALYSES))

    def arguments(parser):
        parser.add_argument("--power", type=float, default=2.0, help="norm order")

    @cli.analysis("weight-norm", "norm of all weights -> norm.json", arguments)
    def weight_norm(run, args, out):
        norm = torch.cat([p.flatten() for p in run.model.parameters()]).norm(args.power).item()
        (out / "norm.json").write_text(json.dumps({"norm": norm}))
        return {"norm": norm}

    out = tmp_path / "run"
    assert run_cli(TRAIN + ["--epochs", "0", "--out", str(out)], capsys)[0] == 0
    code, stdout, _ = run_cli(["analyze", "weight-norm", "--checkpoint", str(out),
                               "--out", str(tmp_path / "res"), "--power", "1"], capsys)
    assert code == 0 and "analyze weight-norm" in stdout
    expected = sum(v.abs().sum() for v in train.load_checkpoint(out / "checkpoint.pt")["model"]
                   .values()).item()
    got = json.loads((tmp_path / "res" / "norm.json").read_text())["norm"]
    assert got == pytest.approx(expected, rel=1e-5)


def test_preset_extras_reach_loader_model_and_fit():
    from toolkit.presets import Preset
    p = Preset("x", "toy", dataset="gaussian_mixture", model="mlp", widths=(8, 4), epochs=2,
               batch_size=16, lr=0.1, extra={"n_classes": 3, "dim": 5, "activation": "tanh",
                                             "momentum": 0.5, "loss": "mse", "panel_epochs": 9})
    d = cli.dataset_spec(p, seed=4)
    assert d == {"name": "gaussian_mixture", "kwargs": {"n_classes": 3, "dim": 5, "seed": 4}}
    tr, _ = cli.build_dataset(d)
    m = cli.model_spec(p, tr)
    assert m == {"name": "mlp", "kwargs": {"in_dim": 5, "widths": [8, 4], "out_dim": 3,
                                           "activation": "tanh"}}
    assert cli.fit_kwargs(p) == {"epochs": 2, "batch_size": 16, "lr": 0.1, "momentum": 0.5,
                                 "loss": "mse"}
    with pytest.raises(cli.UsageError, match="dataset 'imagenet'"):
        cli.dataset_spec(Preset("x", "toy", dataset="imagenet", model="mlp"), seed=0)


def test_registered_presets_map_to_runs_or_refuse_clearly():
    from toolkit import presets
    for experiment in presets.experiments():
        for name in ("toy",):
            p = presets.get_preset(experiment, name)
            if experiment in cli.NOT_A_SINGLE_FIT:
                with pytest.raises(cli.UsageError, match="papermill notebooks/"):
                    cli.model_spec(p, None)
                continue
            spec = cli.dataset_spec(p, seed=0)
            tr, _ = cli.build_dataset(spec)
            if isinstance(p.extra.get("n_train"), int) and "n_train" not in spec["kwargs"]:
                assert len(tr) == p.extra["n_train"]  # e.g. the terminal-phase subset
            model = cli.build_model(cli.model_spec(p, tr))
            assert model(tr.tensors[0][:3]).shape[0] == 3


def test_method_analyses_match_the_library_on_the_same_checkpoint(tmp_path, capsys):
    """analyze landscape|hessian|ntk write files equal to calling the library on the loaded run."""
    from toolkit import hessian, landscape, ntk
    code, _, err = run_cli([*TRAIN, "--epochs", "1", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    common = ["--checkpoint", str(tmp_path), "--device", "cpu", "--n-samples", "64"]
    for kind in ("landscape", "hessian", "ntk", "collapse", "spectra"):
        extra = {"landscape": ["--steps", "5"], "collapse": []}.get(kind, [])
        args = common if kind not in ("collapse", "spectra") else common[:4]  # no --n-samples
        code, out, err = run_cli(["analyze", kind, *args, *extra], capsys)
        assert code == 0, err
        assert f"analyze {kind}" in out
    run = cli.load_run(tmp_path)
    x, y = run.train_set.tensors
    x, y = x[:64], y[:64]
    kernel = torch.load(tmp_path / "ntk.pt", weights_only=True)["kernel"]
    torch.testing.assert_close(kernel, ntk.empirical_ntk(run.model, x, progress=False))
    surf = torch.load(tmp_path / "surface.pt", weights_only=True)
    d1 = landscape.random_direction(run.model, seed=0)
    d2 = landscape.random_direction(run.model, seed=1)
    ref = landscape.surface_2d(run.model, "ce", (x, y), d1, d2, steps=5, progress=False)
    assert surf["loss"].numpy() == pytest.approx(ref.loss, rel=1e-6)
    top = json.loads((tmp_path / "hessian.json").read_text())["lambda_max"]
    ref_top = hessian.top_eigenvalues(run.model, "ce", (x, y), k=1).eigenvalues[0]
    assert top == pytest.approx(ref_top, rel=1e-3)
    from toolkit import collapse
    nc = json.loads((tmp_path / "collapse.json").read_text())
    ref_nc = collapse.nc_metrics(*collapse.extract_features(run.model, run.train_set.tensors),
                                 weight=run.model.head.weight, bias=run.model.head.bias)
    assert nc["nc1"] == pytest.approx(ref_nc.nc1, rel=1e-6)
    from toolkit import spectra
    table = pd.read_csv(tmp_path / "spectra.csv")
    ref_table = spectra.layer_report(run.model)
    assert table["alpha"].tolist() == pytest.approx(ref_table["alpha"].tolist(), rel=1e-9)


def test_analyze_ntk_summary_is_the_same_in_every_mode(tmp_path, capsys):
    """The summary eigenvalues use the trace kernel whatever --mode stored."""
    import re
    code, _, err = run_cli([*TRAIN, "--epochs", "1", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    summaries = {}
    for mode in ("trace", "diagonal", "full"):
        code, out, err = run_cli(["analyze", "ntk", "--checkpoint", str(tmp_path), "--device", "cpu",
                                  "--n-samples", "16", "--mode", mode], capsys)
        assert code == 0, err
        summaries[mode] = float(re.search(r"lambda_max ([0-9.e+-]+)", out).group(1))
        assert torch.load(tmp_path / "ntk.pt", weights_only=True)["mode"] == mode
    assert summaries["diagonal"] == pytest.approx(summaries["trace"], rel=1e-3)
    assert summaries["full"] == pytest.approx(summaries["trace"], rel=1e-3)


def test_collapse_preset_builds_the_batch_norm_mlp_through_extra():
    """No special model registry: the collapse preset names model "mlp" with norm="batch" in its
    extra knobs, passed through like any constructor argument."""
    from toolkit import models, presets
    p = presets.get_preset("collapse", "toy")
    tr, _ = cli.build_dataset(cli.dataset_spec(p, seed=0))
    spec = cli.model_spec(p, tr)
    assert spec["name"] == "mlp"
    assert spec["kwargs"]["norm"] == "batch" and spec["kwargs"]["out_dim"] == 10
    model = cli.build_model(spec)
    assert isinstance(model, models.MLP)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == len(p.widths)
    assert not hasattr(cli, "EXTRA_MODELS")


def test_a_run_written_with_the_retired_bn_mlp_name_fails_naming_the_fix(tmp_path, capsys):
    run = tmp_path / "old_run"
    run.mkdir()
    (run / cli.RUN_FILE).write_text(json.dumps({
        "model": {"name": "bn_mlp", "kwargs": {"in_dim": 64, "widths": [8], "n_classes": 10}},
        "dataset": {"name": "digits", "kwargs": {"seed": 0}}}))
    (run / train.CHECKPOINT_NAME).write_bytes(b"")
    code, _, err = run_cli(["analyze", "eval", "--checkpoint", str(run)], capsys)
    assert code == 2
    assert "'bn_mlp'" in err and '"norm": "batch"' in err and '"out_dim"' in err
