"""Tests of shmopt.problems: the Problem record, the built-ins and the loader."""
from __future__ import annotations

import math
import multiprocessing
import pickle
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shmopt.errors import ConfigError, ProblemError
from shmopt.problems import BUILTIN_PROBLEMS, Problem, import_problem_source, load_problem, parse_options
from shmopt.problems.builtin import least_squares_loss, logreg, logreg_optimum, logreg_solve, quadratic
from shmopt.problems.loader import user_module_name

#: image problems that read users' files (tested on generated files in test_image_data.py)
FROM_FILES = {"cifar10", "fashion-mnist", "movielens-mf",   # movielens-mf: tests/unit/test_movielens_data.py
              "wordnet-kg",                                # wordnet-kg: tests/unit/test_wordnet_kg.py
              "spam-logreg",                               # spam-logreg: tests/unit/test_spam_logreg.py
              "skipgram"}                                  # skipgram: tests/unit/test_skipgram.py
BUILT_IN = sorted(set(BUILTIN_PROBLEMS) - FROM_FILES)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_module.py"


# --------------------------------------------------------------------------- helpers
def _linear_32() -> nn.Module:
    return nn.Linear(32, 1, bias=False)


def _no_params() -> nn.Module:
    return nn.ReLU()


def _vector_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x).squeeze(-1) - y).pow(2)


def _nan_loss(model: nn.Module, batch) -> torch.Tensor:
    return least_squares_loss(model, batch) * float("nan")


def _small_problem(**kw) -> Problem:
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 32, generator=g), torch.randn(64, generator=g)
    fields = dict(name="small", model=_linear_32, loss=least_squares_loss, train=(X, y), batch_size=8)
    fields.update(kw)
    return Problem(**fields)


def _logreg_objective(w, b, X, y, l2):
    return F.binary_cross_entropy_with_logits(X @ w + b, y) + 0.5 * l2 * w.pow(2).sum()


def _full_objective(p: Problem, model: nn.Module) -> float:
    with torch.no_grad():
        return float(p.loss(model, p.eval_data()))


def _assert_one_line(exc: BaseException, *parts: str) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.strip() == msg and msg, repr(msg)
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# --------------------------------------------------------------------------- built-ins
@pytest.mark.parametrize("name", BUILT_IN)
def test_builtin_validates_and_pickles(name):
    p = BUILTIN_PROBLEMS[name]()
    assert isinstance(p, Problem) and p.name == name and p.description
    p.validate()
    for t in p.train + p.eval_data():
        assert t.is_contiguous() and t.device.type == "cpu" and not t.requires_grad
        assert t.dtype in (torch.float32, torch.int64)
    assert p.train[0].dtype == (torch.int64 if p.sparse_parameters else torch.float32)   # bags of rows
    assert {"sgd", "amsgrad"} <= set(p.lr) and all(v > 0 for v in p.lr.values())

    model = pickle.loads(pickle.dumps(p.model))
    loss = pickle.loads(pickle.dumps(p.loss))
    torch.manual_seed(3)
    m1 = model()
    torch.manual_seed(3)
    m2 = p.model()
    batch = tuple(t[: p.batch_size] for t in p.train)
    v1, v2 = loss(m1, batch), p.loss(m2, batch)
    assert v1.dim() == 0 and torch.isfinite(v1)
    assert torch.equal(v1, v2)
    v1.backward()
    assert all(q.grad is not None for q in m1.parameters())


@pytest.mark.parametrize("name", sorted(set(BUILT_IN) - {"breast-cancer"}))   # its data is fixed
def test_builtin_deterministic_per_seed(name):
    build = BUILTIN_PROBLEMS[name]
    torch.manual_seed(123)
    a = build(seed=0)
    after_build = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_build), "building must not consume the global RNG"
    b = build(seed=0)
    c = build(seed=1)
    for x, y in zip(a.train + a.eval_data(), b.train + b.eval_data()):
        assert torch.equal(x, y)
    assert a.optimum == b.optimum
    assert not torch.equal(a.train[0], c.train[0])
    assert not torch.equal(a.train[1], c.train[1])
    if a.optimum is not None:
        assert a.optimum != c.optimum


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_factory_same_architecture_and_seeded(name):
    p = BUILTIN_PROBLEMS[name]()
    torch.manual_seed(7)
    s1 = p.model().state_dict()
    torch.manual_seed(7)
    s2 = p.model().state_dict()
    s3 = p.model().state_dict()
    assert list(s1) == list(s2) == list(s3)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_mlp_has_held_out_eval_and_costs_more_than_logreg():
    p = BUILTIN_PROBLEMS["mlp"]()
    assert p.eval is not None and p.eval[0].shape[0] > 0
    assert p.train[0].shape == (65536, 64) and p.train[1].dtype == torch.int64
    assert not torch.equal(p.eval[0][:10], p.train[0][:10])
    counts = torch.bincount(p.train[1], minlength=10)
    assert (counts > 0).all()
    n_mlp = sum(q.numel() for q in p.model().parameters())
    n_log = sum(q.numel() for q in logreg().model().parameters())
    assert n_mlp > 100 * n_log


def test_quadratic_optimum_is_lstsq_objective():
    p = quadratic()
    X, y = (t.double() for t in p.train)
    w = torch.linalg.solve(X.T @ X, X.T @ y)  # normal equations, independent of lstsq
    best = 0.5 * (X @ w - y).pow(2).mean().item()
    assert p.optimum == pytest.approx(best, rel=1e-9)
    assert 0 < p.optimum < 0.5 * 0.1**2  # about 0.5*noise^2*(1-d/n)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        w_rand = w + 0.05 * torch.randn(w.shape, generator=g, dtype=torch.float64)
        assert 0.5 * (X @ w_rand - y).pow(2).mean().item() > p.optimum
    model = p.model()
    with torch.no_grad():
        model.weight.copy_(w.float().unsqueeze(0))
    assert _full_objective(p, model) == pytest.approx(p.optimum, rel=1e-4)


def test_logreg_optimum_is_stationary_and_minimal():
    p = logreg()
    X, y = p.train
    l2 = 1e-3
    w, b, value = logreg_solve(X, y, l2)
    X64, y64 = X.double(), y.double()
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    obj = _logreg_objective(w, b, X64, y64, l2)
    gw, gb = torch.autograd.grad(obj, (w, b))
    grad_norm = torch.sqrt(gw.pow(2).sum() + gb.pow(2)).item()
    assert grad_norm < 1e-7
    assert obj.item() == pytest.approx(value, rel=1e-12)
    assert logreg_optimum(X, y, l2) == pytest.approx(value, rel=1e-10)
    assert p.optimum == pytest.approx(value, rel=1e-10)

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for eps in (1e-3, 1e-2, 1e-1):
            for _ in range(5):
                dw = eps * torch.randn(w.shape, generator=g, dtype=torch.float64)
                db = eps * torch.randn((), generator=g, dtype=torch.float64)
                assert _logreg_objective(w + dw, b + db, X64, y64, l2).item() > value

    # The problem's own loss is that objective (bias not regularised, float32 model).
    model = p.model()
    with torch.no_grad():
        model.weight.copy_(w.detach().float().unsqueeze(0))
        model.bias.fill_(float(b))
    assert abs(b.item()) > 0.05  # so a regularised bias would show in the check below
    assert _full_objective(p, model) == pytest.approx(value, rel=2e-6)


def test_logreg_options_change_the_optimum():
    small = logreg(n=512, l2=1e-2)
    assert small.train[0].shape == (512, 32)
    assert small.optimum == pytest.approx(logreg_optimum(*small.train, 1e-2), rel=1e-10)
    assert small.optimum != pytest.approx(logreg_optimum(*small.train, 1e-3), rel=1e-6)


@pytest.mark.parametrize("rule", ["sgd", "amsgrad"])
def test_single_process_reaches_logreg_optimum(rule):
    p = logreg()
    lr = p.lr[rule]
    torch.manual_seed(0)
    model = p.model()
    if rule == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)
    g = torch.Generator().manual_seed(0)
    n = p.num_train
    start = _full_objective(p, model)
    assert start > 1.05 * p.optimum
    reached = None
    for step in range(1, 2001):
        idx = torch.randint(n, (p.batch_size,), generator=g)
        opt.zero_grad()
        p.loss(model, tuple(t[idx] for t in p.train)).backward()
        opt.step()
        if step % 50 == 0:
            value = _full_objective(p, model)
            assert value >= p.optimum * (1 - 1e-6), "objective below the computed optimum"
            if value <= 1.01 * p.optimum:
                reached = step
                break
    assert reached is not None, f"{rule} lr={lr} did not reach 1% of the optimum in 2000 steps"


# --------------------------------------------------------------------------- Problem
def test_eval_data():
    p = _small_problem()
    assert p.eval_data() is p.train
    e = (p.train[0][:10].clone(), p.train[1][:10].clone())
    q = _small_problem(eval=e)
    assert q.eval_data() is e
    q.validate()
    assert issubclass(ProblemError, ConfigError) and issubclass(ProblemError, ValueError)


def test_problem_pickles_and_repr_is_short():
    p = _small_problem()
    q = pickle.loads(pickle.dumps(p))
    assert torch.equal(q.train[0], p.train[0]) and q.model is _linear_32
    assert "64, 32" in repr(p) and len(repr(p)) < 300


_G = torch.Generator().manual_seed(0)
_X = torch.randn(64, 32, generator=_G)
_Y = torch.randn(64, generator=_G)


@pytest.mark.parametrize("fields, parts", [
    (dict(train=(_X, _Y[:10])), ["first dimensions", "[64, 10]"]),
    (dict(train=()), ["non-empty tuple"]),
    (dict(train=(_X[:0], _Y[:0])), ["empty"]),
    (dict(train=(_X.numpy(), _Y)), ["train[0]", "torch.Tensor"]),
    (dict(train=(_X.bfloat16(), _Y)), ["train[0]", "bfloat16", "float32, float16, float64, uint8"]),
    (dict(train=(_X.t(), _Y)), ["train[0]", "contiguous"]),
    (dict(eval=(_X[:, :3].contiguous(), _Y)), ["eval[0]", "only the sample dimension"]),
    (dict(batch_size=65), ["batch_size 65", "64 training samples", "1..64"]),
    (dict(model=_no_params), ["no trainable floating-point parameters"]),
    (dict(model=partial(nn.Linear, 3, 1)),
     ["the loss failed on a batch of the data: RuntimeError", "mat1 and mat2"]),
    (dict(loss=_vector_loss), ["scalar (0-dim)", "(8,)"]),
    (dict(loss=_nan_loss), ["not finite", "nan"]),
    (dict(model=lambda: nn.Linear(32, 1, bias=False)), ["<lambda>", "not picklable", "module-level"]),
    (dict(lr={"sgd": -1.0}), ["lr", "positive"]),
    (dict(optimum=float("inf")), ["optimum", "finite"]),
])
def test_validate_rejects(fields, parts):
    p = _small_problem(**fields)
    with pytest.raises(ProblemError) as info:
        p.validate()
    _assert_one_line(info.value, "problem 'small'", *parts)


def test_validate_accepts_small_problem_and_keeps_rng():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    _small_problem().validate()
    assert torch.equal(torch.rand(4), expected)


# --------------------------------------------------------------------------- loader
def test_parse_options():
    opts = parse_options(["n=512", "l2=1e-4", "name=foo", "flag=True", "shape=(2, 3)", "s='x y'",
                          "e=", "expr=a=b", " seed = 3 "])
    assert opts == {"n": 512, "l2": 1e-4, "name": "foo", "flag": True, "shape": (2, 3), "s": "x y",
                    "e": "", "expr": "a=b", "seed": 3}
    assert isinstance(opts["n"], int) and isinstance(opts["l2"], float)
    assert parse_options([]) == {}


@pytest.mark.parametrize("pairs, parts", [
    (["n512"], ["malformed problem option 'n512'", "key=value"]),
    (["=3"], ["malformed problem option '=3'"]),
    (["n=1", "n=2"], ["'n' given twice"]),
])
def test_parse_options_rejects(pairs, parts):
    with pytest.raises(ProblemError) as info:
        parse_options(pairs)
    _assert_one_line(info.value, *parts)


def test_load_builtin_with_options():
    p = load_problem("logreg", **parse_options(["n=512", "l2=1e-4", "batch_size=16"]))
    assert p.name == "logreg" and p.train[0].shape == (512, 32) and p.batch_size == 16
    assert p.optimum == pytest.approx(logreg_optimum(*p.train, 1e-4), rel=1e-10)


def test_load_module_function():
    p = load_problem("shmopt.problems.builtin:quadratic", n=256, d=8)
    assert p.name == "quadratic" and p.train[0].shape == (256, 8)
    import_problem_source("shmopt.problems.builtin:quadratic")
    import_problem_source("quadratic")


def test_load_python_file():
    p = load_problem(str(EXAMPLE), n=256)
    name = user_module_name(EXAMPLE)
    prefix = "shmopt_user_custom_module_"
    assert name.startswith(prefix) and len(name) == len(prefix) + 8
    assert name in sys.modules and p.model.func.__module__ == name
    assert p.train[0].shape == (256, 2) and p.eval is not None
    model = pickle.loads(pickle.dumps(p.model))()
    assert type(model).__module__ == name and type(model).__name__ == "ResidualMLP"
    assert any(isinstance(m, nn.LayerNorm) for m in model.modules())
    again = load_problem(str(EXAMPLE))
    assert again.model.func is p.model.func  # the file is imported once per process
    import_problem_source(str(EXAMPLE))
    assert sys.modules[name] is sys.modules[p.model.func.__module__]


def test_relative_file_path_gives_same_module(monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)
    assert user_module_name("custom_module.py") == user_module_name(EXAMPLE)
    p = load_problem("custom_module.py", n=128)
    assert p.model.func.__module__ == user_module_name(EXAMPLE)


def test_file_runs_once_and_import_source_does_not_call_problem(tmp_path):
    log = tmp_path / "log.txt"
    f = tmp_path / "counted.py"
    f.write_text(textwrap.dedent(f"""
        from shmopt.problems.builtin import quadratic
        with open({str(log)!r}, "a") as fh:
            fh.write("import\\n")
        def problem(**kw):
            with open({str(log)!r}, "a") as fh:
                fh.write("problem\\n")
            return quadratic(n=64, d=4, batch_size=8)
    """))
    import_problem_source(str(f))
    assert log.read_text().split() == ["import"]
    import_problem_source(str(f))
    load_problem(str(f))
    assert log.read_text().split() == ["import", "problem"]


_BAD_FILES = {
    "raises.py": "raise ValueError('boom')\n",
    "noproblem.py": "def make():\n    return None\n",
    "returns_int.py": "def problem():\n    return 42\n",
    "raises_in_problem.py": "def problem():\n    raise RuntimeError('cannot build')\n",
    "mismatch.py": textwrap.dedent("""
        from functools import partial
        from torch import nn
        from shmopt.problems import Problem
        from shmopt.problems.builtin import logreg
        def problem():
            p = logreg(n=256)
            return Problem(name="mismatch", model=partial(nn.Linear, 3, 1), loss=p.loss, train=p.train)
    """),
    "lambda_model.py": textwrap.dedent("""
        from torch import nn
        from shmopt.problems import Problem
        from shmopt.problems.builtin import quadratic
        def problem():
            p = quadratic(n=128)
            return Problem(name="lam", model=lambda: nn.Linear(32, 1, bias=False), loss=p.loss,
                           train=p.train)
    """),
}


@pytest.mark.parametrize("spec, options, parts", [
    ("nosuch", {}, ["unknown problem 'nosuch': choose a built-in (breast-cancer, cifar10, digits, embedding-bag, "
                    "fashion-mnist, logreg, mlp, mnist, movielens-mf, quadratic, skipgram, spam-logreg, wordnet-kg), a .py file or "
                    "module:function"]),
    ("{tmp}/missing.py", {}, ["problem file", "missing.py does not exist"]),
    ("{tmp}/raises.py", {}, ["problem file", "raises.py raised on import: ValueError: boom"]),
    ("{tmp}/noproblem.py", {}, ["noproblem.py has no problem() function"]),
    ("{tmp}/returns_int.py", {}, ["returns_int.py", "returned int", "Problem"]),
    ("{tmp}/raises_in_problem.py", {}, ["raised while building: RuntimeError: cannot build"]),
    ("{tmp}/mismatch.py", {}, ["problem 'mismatch'", "the loss failed on a batch of the data: RuntimeError"]),
    ("{tmp}/lambda_model.py", {}, ["problem 'lam'", "not picklable", "module-level functions"]),
    ("logreg", {"foo": 1}, ["no option 'foo'", "accepted options: n, d, l2, seed, batch_size"]),
    ("{tmp}/returns_int.py", {"n": 3}, ["no option 'n'", "accepted options: none"]),
    ("logreg", {"n": 100, "batch_size": 1000}, ["problem 'logreg'", "batch_size 1000",
                                                "100 training samples"]),
    ("logreg", {"n": "abc"}, ["problem 'logreg': invalid n='abc': must be an integer >= 1"]),
    ("quadratic", {"noise": -1.0}, ["problem 'quadratic': invalid noise=-1.0: must be >= 0"]),
    ("shmopt.problems.builtin:nosuch", {}, ["has no function 'nosuch'"]),
    ("no_such_module_xyz:problem", {}, ["'no_such_module_xyz'", "could not be imported",
                                        "ModuleNotFoundError"]),
    (":problem", {}, ["malformed problem spec"]),
])
def test_load_problem_errors(tmp_path, spec, options, parts):
    for fname, text in _BAD_FILES.items():
        (tmp_path / fname).write_text(text)
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(ProblemError) as info:
        load_problem(spec, **options)
    _assert_one_line(info.value, *parts)


def test_import_problem_source_errors(tmp_path):
    with pytest.raises(ProblemError) as info:
        import_problem_source("nosuch")
    _assert_one_line(info.value, "unknown problem 'nosuch'")
    (tmp_path / "raises.py").write_text("raise ValueError('boom')\n")
    with pytest.raises(ProblemError) as info:
        import_problem_source(str(tmp_path / "raises.py"))
    _assert_one_line(info.value, "raised on import: ValueError: boom")
    assert user_module_name(tmp_path / "raises.py") not in sys.modules


# --------------------------------------------------------------------------- fresh process
def _child(path: str, module_name: str, payload: bytes, conn) -> None:
    report = {"preloaded": module_name in sys.modules}
    try:
        pickle.loads(payload)
        report["before"] = "loaded"
    except (ModuleNotFoundError, AttributeError) as exc:
        report["before"] = type(exc).__name__
    import_problem_source(path)
    model_factory, loss, batch = pickle.loads(payload)
    model = model_factory()
    value = loss(model, batch)
    report.update(cls=type(model).__module__ + "." + type(model).__name__, value=float(value))
    conn.send(report)
    conn.close()


def test_import_problem_source_in_spawned_process():
    p = load_problem(str(EXAMPLE), n=128)
    batch = tuple(t[:16] for t in p.train)
    payload = pickle.dumps((p.model, p.loss, batch))
    name = user_module_name(EXAMPLE)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(EXAMPLE), name, payload, child))
    proc.start()
    child.close()
    try:
        assert parent.poll(60), "child sent nothing"
        report = parent.recv()
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert proc.exitcode == 0
    assert report["preloaded"] is False
    assert report["before"] == "ModuleNotFoundError"
    assert report["cls"] == f"{name}.ResidualMLP"
    assert math.isfinite(report["value"]) and report["value"] > 0
