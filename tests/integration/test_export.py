"""shmopt export: a checkpoint's trained model as a plain PyTorch state_dict that
torch.load(weights_only=True) loads into the problem's model, and its optimizer state in
torch.optim's format; bad input refused before anything is written."""
from __future__ import annotations

import pytest
import torch
from helpers import run_main

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.problems import load_problem


def test_export_gives_the_trained_model_and_its_optimizer_state(tmp_path, capsys):
    path = tmp_path / "run.ckpt"
    code, _, err = run_main(["run", "mlp", "-o", "hidden=16", "--algo", "apam", "--steps", "60", "--quiet",
                             "--checkpoint", str(path), "--save", str(tmp_path / "saved.pt")], capsys)
    assert code == 0, err
    code, out, err = run_main(["export", str(path), str(tmp_path / "model")], capsys)
    assert code == 0, err
    assert "model.pt" in out and "model.optim.pt" in out
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    model = load_problem("mlp", hidden=16).model()
    model.load_state_dict(state)                                  # strict: every key, every shape
    saved = torch.load(tmp_path / "saved.pt", weights_only=True)  # what the run handed back
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    opt_state = torch.load(tmp_path / "model.optim.pt", weights_only=True)
    opt = torch.optim.Adam(model.parameters(), amsgrad=True)
    opt.load_state_dict(opt_state)
    doc = ckpt.load(str(path))
    m = doc["buffers"]["state_m"].view(torch.float32)
    flat = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()])
    assert torch.equal(flat, m) and float(opt.state[next(model.parameters())]["step"]) == doc["updates"]


def test_export_of_a_run_from_python_names_the_problem(tmp_path):
    problem = load_problem("logreg", n=256, d=4)
    shmopt.train(problem, algo="hogwild", workers=2, steps=20, checkpoint=str(tmp_path / "c.ckpt"))
    from shmopt.errors import ConfigError
    from shmopt.export import export_checkpoint
    with pytest.raises(ConfigError, match="does not say which problem it trained"):
        export_checkpoint(str(tmp_path / "c.ckpt"), str(tmp_path / "m"))
    written = export_checkpoint(str(tmp_path / "c.ckpt"), str(tmp_path / "m"), "logreg", {"n": 256, "d": 4})
    assert set(written) >= {"model", "optimizer"}
    with pytest.raises(ConfigError, match="does not fit this run"):      # another model
        export_checkpoint(str(tmp_path / "c.ckpt"), str(tmp_path / "m2"), "logreg", {"n": 256, "d": 5})


@pytest.mark.parametrize("args, needle", [
    (["missing.ckpt", "out"], "does not exist"),
    (["{ckpt}", "no/such/folder/out"], "invalid model="),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    path = tmp_path / "run.ckpt"
    shmopt.train("quadratic", algo="hogwild", workers=1, steps=10, checkpoint=str(path))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_main(["export", *[a.format(ckpt=path) if "{" in a else str(tmp_path / a) for a in args]],
                            capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
