"""Option checks: each Config field's own check runs when the Config is built, the rules between
options run in one place (config_rules), and the CLI, the Python API, a Config built by hand and a
checkpoint's stored configuration all give the same one line."""
from __future__ import annotations

import dataclasses

import pytest

import shmopt
from shmopt import checks, config_rules
from shmopt.cli import main
from shmopt.config import Config, option_name
from shmopt.errors import ConfigError, ProblemError
from shmopt.strategies.algorithms import get_algorithm
from shmopt.strategies.replicas import REPLICA_METHODS

# (train() keywords, the CLI's flags, the message)
SAME = [
    (dict(time_limit=0.0), ["--time-limit", "0"], "invalid time-limit=0.0: must be > 0"),
    (dict(workers=0), ["--workers", "0"], "invalid workers=0: must be an integer >= 1"),
    (dict(workers=300), ["--workers", "300"], "invalid workers=300: at most 256 are supported"),
    (dict(lam=1.5), ["--lam", "1.5"], "invalid lam=1.5: must be in [0, 1]"),
    (dict(eval_samples=0), ["--eval-samples", "0"], "invalid eval-samples=0: must be an integer >= 1"),
    (dict(outer_momentum=1.0), ["--outer-momentum", "1"], "invalid outer-momentum=1.0: must be in [0, 1)"),
    (dict(read="sideways"), ["--read", "sideways"], "invalid read='sideways': choose one of snapshot, inplace"),
    (dict(k="fast", algo="k-sync"), ["--k", "fast", "--algo", "k-sync"], "invalid k='fast'"),
    (dict(master="host"), ["--master", "host"], "invalid master='host': give HOST:PORT"),
    (dict(slow=("0:fast",)), ["--slow", "0:fast"], "invalid --slow '0:fast': FACTOR must be a number > 0"),
    # rules between options (config_rules), the same through every front end
    (dict(checkpoint_every=10), ["--checkpoint-every", "10"], "--checkpoint-every needs --checkpoint FILE"),
    (dict(algo="apam", k=2), ["--algo", "apam", "--k", "2"], "--k applies to server protocols only"),
    (dict(algo="k-sync", k=2, k_patience=2), ["--algo", "k-sync", "--k", "2", "--k-patience", "2"],
     "--k-patience applies to --k adaptive only"),
    (dict(lr_policy="dutta", lr_c=1.0, read="inplace"),
     ["--lr-policy", "dutta", "--lr-c", "1", "--read", "inplace"], "the dutta lr policy needs"),
    (dict(lr_max=0.1), ["--lr-max", "0.1"], "--lr-c and --lr-max belong to the dutta lr policy"),
    (dict(slow=("7:2",)), ["--slow", "7:2"], "rank 7 out of range [0, 2)"),
]


@pytest.mark.parametrize("kw, args, message", SAME, ids=[m for _, _, m in SAME])
def test_cli_and_python_api_give_the_same_line(kw, args, message, capsys):
    with pytest.raises(ConfigError) as info:
        shmopt.train("logreg", **kw)
    api = str(info.value)
    assert message in api and "\n" not in api
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "logreg", *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == f"shmopt: error: {api}"


def test_a_field_check_runs_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"^invalid time-limit=0: must be > 0$"):
        Config(time_limit=0)
    with pytest.raises(ConfigError, match=r"^invalid heartbeat-timeout=nan: must be a finite number > 0$"):
        Config(heartbeat_timeout=float("nan"))
    with pytest.raises(ConfigError, match=r"^invalid pin='yes': must be True or False$"):
        Config(pin="yes")
    with pytest.raises(ConfigError, match=r"^invalid tau=0: must be an integer >= 1$"):
        dataclasses.replace(Config(), tau=0)              # replace() builds a new Config: checked too
    c = Config()
    c.seed = -1                                           # set after it was built: resolve checks again
    with pytest.raises(ConfigError, match=r"^invalid seed=-1: must be an integer >= 0$"):
        shmopt.plan.resolve(c, shmopt.load_problem("logreg"))


def test_none_is_the_default_where_the_default_is_none():
    c = Config(steps=None, lr=None, k=None, threads=None, checkpoint=None)
    assert c.steps is None and c.lr is None
    with pytest.raises(ConfigError, match="invalid eps=None"):
        Config(eps=None)                                  # eps has a number as default


def test_every_field_declares_a_check():
    missing = [f.name for f in dataclasses.fields(Config) if f.metadata.get("check") is None]
    assert missing == []
    assert option_name("time_limit") == "time-limit"


def test_from_dict_refuses_an_unknown_option_and_round_trips():
    with pytest.raises(ConfigError, match=r"^unknown option 'wings': accepted are "):
        Config.from_dict({"wings": 2})
    c = Config(algo="k-sync", workers=4, k=2, betas=(0.5, 0.6), slow=("1:2",))
    assert Config.from_dict(c.to_dict()) == c


def test_stored_config_of_a_checkpoint_uses_the_same_checks():
    good = Config(workers=3).to_dict()
    assert config_rules.stored_config(good, "ck.pt").workers == 3
    with pytest.raises(ConfigError, match=r"^checkpoint 'ck.pt': invalid lr=-1.0: must be > 0$"):
        config_rules.stored_config({**good, "lr": -1.0}, "ck.pt")
    with pytest.raises(ConfigError, match=r"^checkpoint 'ck.pt': unknown option 'colour'"):
        config_rules.stored_config({**good, "colour": "red"}, "ck.pt")
    with pytest.raises(ConfigError, match=r"^checkpoint 'ck.pt': its configuration is missing"):
        config_rules.stored_config(None, "ck.pt")


def test_cross_field_rules_are_named_functions_run_in_one_place():
    names = [r.__name__ for r in config_rules.CROSS_FIELD_RULES]
    assert len(set(names)) == len(names) and "checkpoint_every_needs_checkpoint" in names
    apam = get_algorithm("apam")
    config_rules.check(Config(), apam, 1)
    with pytest.raises(ConfigError, match="apam does not run across nodes|continue is for server"):
        config_rules.check(Config(on_node_failure="continue"), apam, 2)
    # a replica method's own rules between options live with the method (strategies.replicas)
    lsgd = Config(algo="lsgd", workers=4, groups=2)
    with pytest.raises(ConfigError, match="each node is one group"):
        REPLICA_METHODS["lsgd"].from_options(lsgd, 4, 2)
    assert REPLICA_METHODS["lsgd"].from_options(lsgd, 4, 1).n_groups == 2


def test_checks_messages():
    assert checks.integer("n", 3, 1) == 3
    with pytest.raises(ConfigError, match=r"^invalid n=True: must be an integer in \[1, 4\]$"):
        checks.integer("n", True, 1, 4)
    assert checks.number("x", 1) == 1.0 and isinstance(checks.number("x", 1), float)
    with pytest.raises(ConfigError, match=r"^invalid x='1': must be a real number > 0$"):
        checks.number("x", "1", gt=0)
    with pytest.raises(ConfigError, match=r"^invalid x=2: must be in \(0, 1\]$"):
        checks.number("x", 2, gt=0, le=1)
    with pytest.raises(ConfigError, match=r"^invalid p=\(1, 2, 3\): must be a pair of numbers, each >= 0$"):
        checks.pair("p", (1, 2, 3), ge=0)
    with pytest.raises(ConfigError, match=r"^invalid mode='x': choose one of a, b$"):
        checks.choice("mode", "x", ("a", "b"))
    with pytest.raises(ProblemError, match=r"^problem 'toy': invalid n=0: must be an integer >= 1$"):
        with checks.scoped("problem 'toy'", ProblemError):
            checks.integer("n", 0, 1)
