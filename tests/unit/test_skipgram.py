"""The ``skipgram`` problem: corpus readers, vocabulary and pairs, the word tests (Spearman,
3CosAdd), the problem and the engine on it, the own-loop example.

The readers are tested on small corpora and word-test files written here in the packages'
formats; the real packages (janeausten with apt-get, word-tests with pip) are fetched where those
tools are (CI has them), else those tests are skipped saying so."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_main
from test_movielens_data import XDR, write_lazyload

import shmopt
from shmopt.errors import DataError, ProblemError
from shmopt.problems import corpora, load_problem, packages, word_tests
from shmopt.problems.skipgram import SkipGram, draw_negatives

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "skipgram_own_loop.py"
WORDS = ["king", "queen", "man", "woman", "paris", "france", "rome", "italy", "the", "a", "of"]


def fake_word_tests(folder: Path) -> Path:
    """word-tests files in gensim's formats over WORDS (one pair and one question off-vocabulary)."""
    folder.mkdir(parents=True, exist_ok=True)
    sim = "# comment\n# Word 1\tWord 2\tHuman (mean)\nKing\tqueen\t8.5\nman\twoman\t8.3\nparis\titaly\t2.0\n" \
          "king\tzebra\t1.0\nthe\tof\t0.5\n"
    (folder / "wordsim353.tsv").write_text(sim)
    (folder / "simlex999.txt").write_text(sim)
    (folder / "questions-words.txt").write_text(": capital\nParis France Rome Italy\nRome Italy Paris France\n"
                                                ": gender\nman woman king queen\nman woman king zebra\n")
    return folder


def fake_brown(folder: Path, seed: int = 0, files: int = 3, words: int = 600) -> Path:
    """Brown-format files ca01.. of random WORDS tagged word/TAG, plus a README to ignore."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        toks = [f"{WORDS[j].capitalize() if j % 3 == 0 else WORDS[j]}/nn" for j in rng.zipf(1.5, words) % len(WORDS)]
        (folder / f"ca{i + 1:02d}").write_text("\n\n\t" + " ./. ".join(" ".join(toks[k:k + 20]) for k in
                                                                        range(0, words, 20)) + "\n")
    (folder / "README").write_text("not/a corpus/file")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    fake_brown(tmp_path / "brown")
    fake_word_tests(tmp_path / "word-tests")
    return tmp_path


# ------------------------------------------------------------------ readers, vocabulary, pairs
def test_tokenize_and_the_brown_reader_strip_tags_and_punctuation(tmp_path):
    assert corpora.tokenize("Don't STOP -- well-known, 1814.") == ["don't", "stop", "well-known", "1814"]
    (tmp_path / "ca01").write_text("\tThe/at Fulton/np-tl County's/nn$ ``/`` jury/nn ./.\n")
    (tmp_path / "cb02").write_text("It/pps said/vbd ./.")
    (tmp_path / "README").write_text("The/at ignored/vbn")
    assert corpora.read_brown(tmp_path) == [["the", "fulton", "county's", "jury"], ["it", "said"]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no Brown corpus files"):
        corpora.read_brown(tmp_path / "empty")


def test_the_janeausten_reader_reads_the_six_novels(tmp_path):
    w = XDR()
    novels = {name: XDR.header(w.strings([name.upper(), "", f"It is a truth {i}, universally", None]))
              for i, name in enumerate(corpora.NOVELS)}
    rdb = write_lazyload(tmp_path, novels)
    docs = corpora.read_janeausten(rdb)
    assert len(docs) == 6 and docs[0] == ["emma", "it", "is", "a", "truth", "0", "universally"]
    rdb = write_lazyload(tmp_path / "bad", {**novels, "emma": XDR.header(w.ints([1]))})
    with pytest.raises(DataError, match="'emma' is a int vector"):
        corpora.read_janeausten(rdb)


def test_vocabulary_and_fixed_window_pairs():
    docs = [["a", "b", "a", "c"], ["b", "a", "d"]]
    vocab = corpora.build_vocab(docs, min_count=2)
    assert vocab.words == ("a", "b") and vocab.counts.tolist() == [3, 2]
    enc = corpora.encode(docs, vocab)
    assert [d.tolist() for d in enc] == [[0, 1, 0], [1, 0]]
    pairs = corpora.skipgram_pairs(enc, vocab.counts, 2, 0.0, False, np.random.default_rng(0))
    # [0 1 0]: distance 1 gives 0-1, 1-0 both ways, distance 2 gives 0-0 both ways; [1 0]: 1-0 both
    # ways; no window crosses the documents' border
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (0, 0), (0, 1), (0, 1), (0, 1), (1, 0), (1, 0), (1, 0)]


def test_dynamic_window_and_subsampling_keep_fewer_pairs():
    rng = np.random.default_rng(1)
    doc = rng.integers(0, 50, 5000)
    counts = np.bincount(doc, minlength=50)
    full = corpora.skipgram_pairs([doc], counts, 5, 0.0, False, np.random.default_rng(0))
    assert len(full) == 2 * sum(5000 - d for d in range(1, 6))
    dyn = corpora.skipgram_pairs([doc], counts, 5, 0.0, True, np.random.default_rng(0))
    assert 0.5 * len(full) < len(dyn) < 0.7 * len(full)          # mean reach 3 of 5
    sub = corpora.skipgram_pairs([doc], counts, 5, 1e-3, False, np.random.default_rng(0))
    assert len(sub) < 0.6 * len(full)                             # every word is frequent here
    cdf = corpora.unigram_cdf(np.array([16, 1]))
    assert cdf[-1] == pytest.approx(1.0) and cdf[0] == pytest.approx(8 / 9)


# ------------------------------------------------------------------ the word tests
def test_ranks_average_ties_and_spearman_matches_scipy_or_a_hand_case():
    x = torch.tensor([10.0, 20.0, 20.0, 5.0, 20.0])
    assert word_tests.ranks(x).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    assert word_tests.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert word_tests.spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)
    assert word_tests.spearman(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])) == 0.0
    stats = pytest.importorskip("scipy.stats", reason="scipy not installed: the hand cases above still ran")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 6, (200,), generator=g).double(), torch.randn(200, generator=g).double()
    b[:50] = a[:50]
    assert word_tests.spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy())[0], abs=1e-12)


def test_word_test_readers_and_coverage(tmp_path):
    folder = fake_word_tests(tmp_path)
    rows = word_tests.read_similarity(folder / "wordsim353.tsv")
    assert rows[0] == ("king", "queen", 8.5) and len(rows) == 5
    index = {w: i for i, w in enumerate(WORDS)}
    pairs, scores = word_tests.similarity_pairs(rows, index)
    assert pairs.tolist() == [[0, 1], [2, 3], [4, 7], [8, 10]] and scores.tolist() == [8.5, 8.3, 2.0, 0.5]
    qs = word_tests.analogy_questions(word_tests.read_analogies(folder / "questions-words.txt"), index)
    assert qs.tolist() == [[4, 5, 6, 7], [6, 7, 4, 5], [2, 3, 0, 1]]
    (folder / "bad.txt").write_text("a\tb\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'word1<TAB>word2<TAB>score'"):
        word_tests.read_similarity(folder / "bad.txt")
    (folder / "bad.txt").write_text(": s\na b c\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected four words"):
        word_tests.read_analogies(folder / "bad.txt")


def test_3cosadd_and_similarity_on_hand_vectors():
    # king - man + woman = queen exactly; the question words are excluded from the answers
    v = torch.tensor([[1.0, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0.1, 0.1]])
    q = torch.tensor([[2, 0, 3, 1], [2, 0, 3, 4]])                # man:king :: woman:queen (then a wrong d)
    assert word_tests.analogy_accuracy(v, q) == 0.5
    assert word_tests.analogy_accuracy(v, torch.zeros((0, 4), dtype=torch.int64)) == 0.0
    pairs = torch.tensor([[0, 4], [0, 1], [2, 3]])                 # cosines 0.78, 0.5, 0
    assert word_tests.similarity_spearman(v, pairs, torch.tensor([9.0, 5.0, 1.0])) == pytest.approx(1.0)
    assert word_tests.similarity_spearman(v, pairs, torch.tensor([1.0, 5.0, 9.0])) == pytest.approx(-1.0)


# ------------------------------------------------------------------ the model, the problem, the engine
def test_the_sgns_loss_per_pair_and_with_a_shared_pool():
    torch.manual_seed(0)
    m = SkipGram(6, 3)
    torch.nn.init.normal_(m.out.weight)
    pairs, neg = torch.tensor([[0, 1], [2, 3]]), torch.tensor([[4, 5], [5, 5]])
    v, u = m.inp.weight, m.out.weight
    ls = torch.nn.functional.logsigmoid
    want = torch.stack([-ls(u[c] @ v[a]) - sum(ls(-u[n] @ v[a]) for n in ns) for (a, c), ns in zip(pairs, neg)])
    assert torch.allclose(m(pairs, neg), want)
    pool = torch.tensor([4, 5, 5, 1])                              # every pair against all, weight k / M
    want = torch.stack([-ls(u[c] @ v[a]) - 0.5 * sum(ls(-u[n] @ v[a]) for n in pool) for a, c in pairs])
    assert torch.allclose(m(pairs, pool, 0.5), want)
    m(pairs, pool, 0.5).mean().backward()
    assert m.out.weight.grad.is_sparse and m.out.weight.grad.coalesce().indices().tolist() == [[1, 3, 4, 5]]
    cdf = torch.from_numpy(corpora.unigram_cdf(np.array([1000, 1, 1, 1, 1, 1])))
    draws = draw_negatives(cdf, 200, 5, torch.Generator().manual_seed(0))
    assert draws.shape == (200, 5) and 0.9 < (draws == 0).double().mean() < 0.99   # 178 / 183 expected


def test_skipgram_problem_on_a_small_corpus(data):
    p = load_problem("skipgram", corpus="brown", data_dir=str(data), dim=8, min_count=1, batch_size=64)
    p.validate()
    assert {name for name, _, _ in p.sparse_parameters} == {"inp.weight", "out.weight"}
    assert p.train[0].dtype == torch.int64 and p.train[0].shape[1] == 2
    m = p.model()
    got = p.metrics(m, p.eval)
    assert set(got) == {"wordsim_spearman", "wordsim_pairs", "simlex_spearman", "simlex_pairs",
                        "analogy_accuracy", "analogy_questions"}
    assert got["wordsim_pairs"] == 4 and got["analogy_questions"] == 3
    m.eval()
    with torch.no_grad():
        assert float(p.loss(m, p.eval)) == float(p.loss(m, p.eval))   # eval negatives are fixed
    again = load_problem("skipgram", corpus="brown", data_dir=str(data), dim=8, min_count=1, batch_size=64,
                         pool=0, dynamic=0)
    assert again.train[0].shape[0] > p.train[0].shape[0]             # a fixed window gives more pairs
    with torch.no_grad():
        assert torch.isfinite(again.loss(m, again.eval))              # k negatives per pair
    same = load_problem("skipgram", corpus="brown", data_dir=str(data), dim=8, min_count=1, batch_size=64)
    assert torch.equal(same.train[0], p.train[0])                     # pairs drawn from the seed


def test_missing_data_and_bad_options_say_one_line(data, capsys):
    with pytest.raises(ProblemError, match=r"janeausten data not found in .*: run `shmopt data fetch janeausten`"):
        load_problem("skipgram", data_dir=str(data))
    with pytest.raises(ProblemError, match="invalid corpus='wiki'"):
        load_problem("skipgram", corpus="wiki", data_dir=str(data))
    with pytest.raises(ProblemError, match="only 0 word"):
        load_problem("skipgram", corpus="brown", data_dir=str(data), min_count=10**6)
    shutil.rmtree(data / "word-tests")
    code, _, err = run_main(["run", "skipgram", "-o", "corpus=brown", "--data-dir", str(data), "--algo",
                             "hogwild", "-w", "1", "--steps", "1"], capsys)
    assert code == 2 and err.strip() == (f"shmopt: error: word-tests data not found in {data / 'word-tests'}: "
                                         "run `shmopt data fetch word-tests`")


@pytest.mark.slow
def test_hogwild_trains_the_tables_and_reports_the_word_metrics(data):
    p = load_problem("skipgram", corpus="brown", data_dir=str(data), dim=8, min_count=1, batch_size=64)
    res = shmopt.train(p, algo="hogwild", workers=2, steps=20, eval_interval=0.2, lr=0.5)
    fm = res.stats["final_metrics"]
    assert fm["wordsim_pairs"] == 4 and -1 <= fm["wordsim_spearman"] <= 1
    assert res.stats["table_rule"] == "row_sgd" and res.stats["rows_touched"] > 0
    assert res.final_loss < np.log(2) * 6                          # the start: 6 logistic terms at 0


def _example():
    spec = importlib.util.spec_from_file_location("skipgram_own_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_the_own_loop_examples_learner_updates_the_shared_tables(data, capsys):
    example = _example()
    p = load_problem("skipgram", corpus="brown", data_dir=str(data), dim=8, min_count=1, batch_size=32)
    shared = shmopt.share(p.model())
    opt = shmopt.SharedSGD(shared.parameters(), lr=0.5)
    try:
        before = shared.module.out.weight.detach().clone()
        example.learner(0, 2, shared, opt, p.loss, p.train[0], 32, 3)          # in this process
        rows = (shared.module.out.weight != before).any(1)
        assert 0 < int(rows.sum()) and opt.step_count == 3
    finally:
        opt.close()
        shared.close()
    assert example.main(["--data-dir", str(data)]) == 2
    assert "run `shmopt data fetch janeausten`" in capsys.readouterr().err


@pytest.mark.slow
def test_the_own_loop_example_runs(data):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--corpus", "brown", "--data-dir", str(data),
                           "--processes", "2", "--steps", "5", "--batch-size", "32", "--dim", "8", "--lr", "0.5"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "320 pairs" in proc.stdout and "by 2 processes" in proc.stdout and "wordsim_spearman" in proc.stdout


# ------------------------------------------------------------------ the real packages
TOOLS = {"debian": ("apt-get", "dpkg-deb"), "pip": (), "npm": ("npm",)}   # pip: this Python's


def fetch_or_skip(root: Path, *names: str) -> Path:
    """Fetch the packages ``names`` into ``root``; skip, naming the tool, where one is missing."""
    for name in names:
        source = packages.PACKAGES[name].source
        lacking = [t for t in TOOLS[source] if shutil.which(t) is None]
        if lacking:
            pytest.skip(f"{', '.join(lacking)} not on PATH: cannot fetch the {source} package of {name!r}")
        packages.fetch(name, root)
    return root


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    return fetch_or_skip(tmp_path_factory.mktemp("data"), "janeausten", "word-tests")


def test_the_real_janeausten_corpus_trains_a_few_steps(fetched):
    docs = corpora.read_janeausten(fetched / "janeausten" / "Rdata.rdb")
    assert [d[:2] for d in docs[:2]] == [["emma", "by"], ["mansfield", "park"]]
    assert 700_000 < sum(map(len, docs)) < 750_000
    p = load_problem("skipgram", data_dir=str(fetched), dim=16)
    res = shmopt.train(p, algo="hogwild", workers=2, steps=6, eval_interval=5)
    fm = res.stats["final_metrics"]
    assert fm["wordsim_pairs"] > 50 and fm["simlex_pairs"] > 300 and fm["analogy_questions"] > 1000
    assert res.stats["rows_touched"] > 0 and res.stats["nonfinite"] == 0


@pytest.mark.slow
def test_the_real_brown_corpus(tmp_path):
    fetch_or_skip(tmp_path, "brown")
    docs = corpora.read_brown(tmp_path / "brown")
    assert len(docs) == 500 and docs[0][:3] == ["the", "fulton", "county"]
    assert 1_000_000 < sum(map(len, docs)) < 1_200_000
