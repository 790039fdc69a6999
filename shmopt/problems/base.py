"""The :class:`Problem` record: what the engine trains, and how it checks it up front.

A problem bundles a *model factory*, a *loss* and the training data.  The engine copies the
data tensors once into shared memory, pickles ``model`` and ``loss`` into every worker process
and calls ``loss(model, batch)`` on mini-batches of ``train``.  Everything that could go wrong
in a worker because of the problem itself is checked here, in the parent, by
:meth:`Problem.validate`, which raises :class:`~shmopt.errors.ProblemError` with a one-line
message naming the problem and what is accepted.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from typing import Callable

import psutil
import torch
from torch import Tensor

from shmopt import checks
from shmopt.errors import ProblemError
from shmopt.memory.shm import fmt_bytes
from shmopt.memory.tables import meta_nbytes, on_meta
from shmopt.problems.dataset import EAGER_BELOW, is_dataset, materialise
from shmopt.problems.sources import STORED_DTYPES, DatasetRows, Rows, TensorRows, batch_dtype
from shmopt.problems.streams import StreamRows, is_stream

__all__ = ["Problem", "describe_exception", "option_checks", "seeded"]

#: dtypes accepted for data tensors, stored as given and converted per batch (sources.batch_dtype)
DATA_DTYPES = STORED_DTYPES

_MAX_DETAIL = 300

#: (name, shape, rows one mini-batch looked up) of a parameter with a sparse gradient
SparseParameter = tuple[str, tuple[int, ...], int]


def describe_exception(exc: BaseException) -> str:
    """``"ExcType: message"`` on a single line (whitespace collapsed, long text shortened)."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def option_checks(problem: str):
    """Context for the checks of a problem builder's options (:mod:`shmopt.checks`): a refused
    option reads ``problem 'NAME': invalid OPTION=VALUE: must be ...`` (a ProblemError)."""
    return checks.scoped(f"problem {problem!r}", ProblemError)


def seeded(seed: object) -> torch.Generator:
    """A fresh generator seeded with the ``seed`` option (an integer >= 0)."""
    return torch.Generator().manual_seed(checks.integer("seed", seed, 0))


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(eq=False, repr=False)
class Problem:
    """A training problem: model factory, loss and data.

    Attributes:
        name: short name used in messages and logs.
        model: picklable zero-argument factory returning a fresh ``torch.nn.Module`` (a
            module-level function or a ``functools.partial`` of one).  It must build the same
            architecture on every call; the engine seeds torch before calling it.
        loss: picklable ``loss(model, batch) -> Tensor`` returning the scalar mean loss of the
            batch *including* any regulariser, i.e. the objective being minimised.
        train: training tensors with a common first dimension ``N`` (e.g. ``(X, y)``);
            contiguous CPU tensors of float32, float16, float64, uint8 or int8-int64, kept at that
            dtype and converted per batch (floating and uint8 to float32, integers to int64). A
            tensor that is a view of a file map (``np.load(path, mmap_mode="r")``) is read from
            the file by every worker, never copied (:mod:`.sources`).
        eval: evaluation tensors in the same layout, or ``None`` to evaluate on ``train``.
        batch_size: mini-batch size, ``1 <= batch_size <= N``.
        lr: suggested learning rate per update-rule name, e.g. ``{"sgd": 0.1, "amsgrad": 0.01}``.
        optimum: the optimal value of the objective on :meth:`eval_data`, when known.
        description: one-line human description (the objective).
        metrics: optional picklable ``metrics(model, batch) -> {name: float}`` computed with the
            loss at every evaluation (classification problems give ``accuracy``, in [0, 1]).
        augment: optional picklable ``augment(batch, generator) -> batch`` applied in the worker
            to every sampled training batch (random crops, flips; :mod:`.augment`), with the
            worker's own generator; same shapes and dtypes out.

    ``train`` and ``eval`` may also be map-style ``torch.utils.data.Dataset`` objects whose items
    are tensors (or tuples of them): one of fewer than 50,000 items is read once into tensors, a
    longer one per batch in the workers (``eager``: True or False to choose; :mod:`.dataset`).
    ``train`` may be a stream too: an ``IterableDataset`` or a function returning an iterator,
    read in order by every worker, which takes its share with ``shmopt.shard_stream``
    (:mod:`.streams`).
    """

    name: str
    model: Callable[[], torch.nn.Module]
    loss: Callable[[torch.nn.Module, tuple[Tensor, ...]], Tensor]
    train: tuple[Tensor, ...]
    eval: tuple[Tensor, ...] | None = None
    batch_size: int = 32
    lr: dict[str, float] = field(default_factory=dict)
    optimum: float | None = None
    description: str = ""
    metrics: Callable[[torch.nn.Module, tuple[Tensor, ...]], dict[str, float]] | None = None
    augment: Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]] | None = None
    #: datasets: True reads every item up front, False per batch, None by length (EAGER_BELOW)
    eager: bool | None = None
    #: set by :meth:`validate`: (name, shape, rows looked up by the first mini-batch) of every
    #: parameter whose gradient is sparse (tables)
    sparse_parameters: tuple[SparseParameter, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        # Accept lists and datasets for convenience; everything else is checked by validate().
        if isinstance(self.train, list):
            self.train = tuple(self.train)
        if isinstance(self.eval, list):
            self.eval = tuple(self.eval)
        self._rows: dict[str, tuple[object, Rows]] = {}
        if self.eager not in (None, True, False):
            raise self._fail(f"eager must be True, False or None (by length), got {self.eager!r}")
        if is_dataset(self.train) and self._reads_eagerly(self.train):
            self.train = materialise(self.train, str(self.name), "train")
        if is_dataset(self.eval) and self._reads_eagerly(self.eval):
            self.eval = materialise(self.eval, str(self.name), "eval")

    def _reads_eagerly(self, dataset: object) -> bool:
        return self.eager if self.eager is not None else len(dataset) < EAGER_BELOW

    # ------------------------------------------------------------------ accessors
    def eval_data(self) -> tuple[Tensor, ...]:
        """The evaluation tensors: ``eval`` if given, else ``train``."""
        return self.eval if self.eval is not None else self.train

    def _rows_of(self, which: str, data: object) -> Rows:
        cached = self._rows.get(which)
        if cached is None or cached[0] is not data:
            rows = (StreamRows(data, str(self.name), which) if is_stream(data)
                    else DatasetRows(data, str(self.name), which) if is_dataset(data)
                    else TensorRows.of(tuple(data)))
            self._rows[which] = cached = (data, rows)
        return cached[1]

    @property
    def rows(self) -> Rows:
        """The training rows (:mod:`.sources`): tensors (in memory or mapped from a file) or a
        dataset read per batch."""
        return self._rows_of("train", self.train)

    @property
    def eval_rows(self) -> Rows:
        """The evaluation rows: ``eval``'s if given, else the training rows."""
        return self.rows if self.eval is None else self._rows_of("eval", self.eval)

    @property
    def num_train(self) -> int | None:
        """Number of training samples ``N`` (first dimension of the training tensors); None for a
        stream."""
        return self.rows.n

    def __repr__(self) -> str:
        def tensors(ts: object) -> str:
            if not isinstance(ts, tuple):
                return repr(ts)
            return "(" + ", ".join(
                f"{_shape(t)} {str(t.dtype).replace('torch.', '')}" if isinstance(t, Tensor) else repr(t)
                for t in ts) + ")"
        return (f"Problem(name={self.name!r}, train={tensors(self.train)}, eval={tensors(self.eval)}, "
                f"batch_size={self.batch_size!r}, lr={self.lr!r}, optimum={self.optimum!r})")

    # ----------------------------------------------------------------- validation
    def _fail(self, what: str) -> ProblemError:
        return ProblemError(f"problem {self.name!r}: {what}")

    def _check_batch_size(self, b: object) -> None:
        if not _is_int(b):
            raise self._fail(f"batch_size must be an integer, got {b!r}")
        n = self.num_train
        if n is None:                     # a stream: its first batch is read by the checks
            n = b if b >= 1 else 1
        if b < 1 or b > n:
            raise self._fail(f"batch_size {b} does not fit the {n} training samples; choose 1..{n}")

    def _check_tensors(self, which: str, data: object) -> None:
        if not isinstance(data, tuple) or not data:
            raise self._fail(f"{which} data must be a non-empty tuple of tensors, e.g. (X, y), "
                             f"got {type(data).__name__}")
        for i, t in enumerate(data):
            where = f"{which}[{i}]"
            if not isinstance(t, Tensor):
                raise self._fail(f"{where} must be a torch.Tensor, got {type(t).__name__}")
            if t.device.type != "cpu":
                raise self._fail(f"{where} is on {t.device}; data tensors must be on the CPU")
            if t.dtype not in DATA_DTYPES:
                raise self._fail(f"{where} has dtype {t.dtype}; accepted are float32, float16, float64, "
                                 "uint8 and int8-int64 (converted per batch to float32 or int64)")
            if t.dim() == 0:
                raise self._fail(f"{where} is a 0-dim tensor; data tensors need a sample dimension")
            if t.requires_grad:
                raise self._fail(f"{where} requires grad; pass plain data tensors (use .detach())")
            if not t.is_contiguous():
                raise self._fail(f"{where} is not contiguous; pass t.contiguous()")
        n = int(data[0].shape[0])
        if n == 0:
            raise self._fail(f"{which} data is empty (0 samples)")
        dims = [int(t.shape[0]) for t in data]
        if any(d != n for d in dims):
            raise self._fail(f"{which} tensors have different first dimensions {dims}; "
                             "all must hold the same number of samples")

    def validate(self) -> None:
        """Check the problem; raise :class:`ProblemError` (one line) on the first defect.

        Checks the field types, the data tensors (non-empty tuples of contiguous CPU tensors with
        equal first dimension, float32/int64, eval laid out like train), ``batch_size``, the
        suggested learning rates and ``optimum``; builds the model (twice, to check that the
        architecture is deterministic) and evaluates the loss on the first training batch and its
        gradient, and on the first eval batch; finally checks that ``model`` and ``loss`` pickle.
        The global torch RNG state is left untouched.
        """
        if not isinstance(self.name, str) or not self.name:
            raise ProblemError(f"problem name must be a non-empty string, got {self.name!r}")
        if not callable(self.model):
            raise self._fail(f"model must be a zero-argument factory returning an nn.Module, "
                             f"got {type(self.model).__name__}")
        if not callable(self.loss):
            raise self._fail(f"loss must be a function loss(model, batch) -> scalar tensor, "
                             f"got {type(self.loss).__name__}")
        if self.metrics is not None and not callable(self.metrics):
            raise self._fail(f"metrics must be a function metrics(model, batch) -> dict of floats, "
                             f"got {type(self.metrics).__name__}")
        if self.augment is not None and not callable(self.augment):
            raise self._fail(f"augment must be a function augment(batch, generator) -> batch, "
                             f"got {type(self.augment).__name__}")
        if not isinstance(self.description, str):
            raise self._fail(f"description must be a string, got {type(self.description).__name__}")

        if not is_dataset(self.train) and not is_stream(self.train):
            self._check_tensors("train", self.train)
        if self.eval is not None and not is_dataset(self.eval) and not is_stream(self.eval):
            self._check_tensors("eval", self.eval)
        if self.eval is not None:
            train, ev = self.rows, self.eval_rows
            if len(ev.shapes) != len(train.shapes):
                raise self._fail(f"eval has {len(ev.shapes)} fields but train has {len(train.shapes)}; "
                                 "they must have the same layout")
            for i, (sa, da, sb, db) in enumerate(zip(train.shapes, train.dtypes, ev.shapes, ev.dtypes)):
                if sa != sb or batch_dtype(da) != batch_dtype(db):
                    raise self._fail(f"eval[{i}] rows are {sb} {batch_dtype(db)} but train[{i}] rows "
                                     f"{sa} {batch_dtype(da)}; only the sample dimension may differ")
        self._check_batch_size(self.batch_size)
        self.rows.check()
        if self.eval is not None:
            self.eval_rows.check()

        if not isinstance(self.lr, dict):
            raise self._fail(f"lr must be a dict of rule name -> learning rate, got {type(self.lr).__name__}")
        for rule, value in self.lr.items():
            if not isinstance(rule, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise self._fail(f"lr entries must be rule name -> positive finite float, "
                                 f"got {rule!r}: {value!r}")
        if self.optimum is not None:
            if isinstance(self.optimum, bool) or not isinstance(self.optimum, (int, float)) \
                    or not math.isfinite(self.optimum):
                raise self._fail(f"optimum must be a finite float or None, got {self.optimum!r}")

        self._check_model_and_loss()
        self._check_picklable()

    def _build(self) -> torch.nn.Module:
        try:
            module = self.model()
        except Exception as exc:  # noqa: BLE001 - reported as a ProblemError
            raise self._fail(f"the model factory raised: {describe_exception(exc)}") from exc
        if not isinstance(module, torch.nn.Module):
            raise self._fail(f"the model factory must return a torch.nn.Module, got {type(module).__name__}")
        return module

    def _build_meta(self) -> torch.nn.Module:
        """A second build to compare architectures, on the meta device (no storage: a model with a
        large table is not held twice); a factory that cannot build on meta is built as usual."""
        try:
            with on_meta():
                return self._build()
        except ProblemError:
            return self._build()

    def _check_memory(self) -> None:
        """Refuse a model whose parameters the machine cannot hold, from a build on the meta
        device, before the first real build (a table of many GB would be an out-of-memory kill)."""
        need, available = meta_nbytes(self.model), psutil.virtual_memory().available
        if need is not None and need > available:
            raise self._fail(f"the model's parameters need {fmt_bytes(need)} but this machine has "
                             f"{fmt_bytes(available)} of memory available; make the model (its tables) "
                             f"smaller")

    def _check_model_and_loss(self) -> None:
        self._check_memory()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = self._build()
            torch.manual_seed(1)
            again = self._build_meta()
        layout = [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()]
        if layout != [(n, tuple(p.shape), p.dtype) for n, p in again.named_parameters()]:
            raise self._fail("the model factory builds a different architecture on each call; "
                             "it must build the same parameters every time")
        params = [p for p in model.parameters() if p.is_floating_point() and p.requires_grad]
        if not params:
            raise self._fail("the model has no trainable floating-point parameters")

        batch = self._augmented(self.rows.first(self.batch_size))
        try:
            with torch.enable_grad():
                value = self.loss(model, batch)
                self._check_loss_value(value, "training")
                if value.grad_fn is None:
                    raise self._fail("the loss does not depend on the model parameters (no grad_fn)")
                value.backward()
        except ProblemError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"the loss failed on a batch of the data: {describe_exception(exc)}") from exc
        if all(p.grad is None for p in params):
            raise self._fail("the loss gives no gradient to any model parameter")
        self.sparse_parameters = self._sparse_of(model)

        if self.eval is not None:
            ebatch = self.eval_rows.head(self.batch_size)
            try:
                with torch.no_grad():
                    self._check_loss_value(self.loss(model, ebatch), "eval")
            except ProblemError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise self._fail(f"the loss failed on a batch of the eval data: "
                                 f"{describe_exception(exc)}") from exc

        if self.metrics is not None:
            self.metric_names(model)

    def _sparse_of(self, model: torch.nn.Module) -> tuple[SparseParameter, ...]:
        """The parameters whose gradient after the first batch is sparse (tables of rows), with the
        rows the batch looked up (duplicates included: an upper bound of its distinct rows)."""
        found = []
        for name, p in model.named_parameters():
            if p.grad is None or not p.grad.is_sparse:
                continue
            if p.dim() < 2 or p.grad.sparse_dim() != 1:
                raise self._fail(f"parameter {name!r} has a sparse gradient of shape {tuple(p.shape)} with "
                                 f"{p.grad.sparse_dim()} sparse dimension(s): shmopt trains tables of rows "
                                 f"(sparse_dim 1, as nn.Embedding(sparse=True) gives)")
            found.append((name, tuple(p.shape), int(p.grad._nnz())))
        return tuple(found)

    def _augmented(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The first batch through ``augment`` (checked: same number, shapes and dtypes)."""
        if self.augment is None:
            return batch
        try:
            out = self.augment(batch, torch.Generator().manual_seed(0))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"augment failed on a batch of the data: {describe_exception(exc)}") from exc
        if not isinstance(out, (tuple, list)) or len(out) != len(batch) or any(
                not isinstance(o, Tensor) or o.shape != b.shape or o.dtype != b.dtype
                for o, b in zip(out, batch)):
            raise self._fail("augment must return the batch's tensors with the same shapes and dtypes")
        return tuple(out)

    def metric_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        """The names the metrics function reports, from one eval batch (checked: a dict of
        finite numbers)."""
        if self.metrics is None:
            return ()
        ebatch = self.eval_rows.head(self.batch_size)
        try:
            with torch.no_grad():
                out = self.metrics(model, ebatch)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"the metrics function failed on a batch of the eval data: "
                             f"{describe_exception(exc)}") from exc
        if not isinstance(out, dict) or not out or not all(
                isinstance(k, str) and math.isfinite(float(v)) for k, v in out.items()):
            raise self._fail(f"metrics must return a non-empty dict of name -> finite number, got {out!r}")
        return tuple(out)

    def _check_loss_value(self, value: object, which: str) -> None:
        if not isinstance(value, Tensor):
            raise self._fail(f"the loss must return a scalar tensor, got {type(value).__name__}")
        if value.dim() != 0:
            raise self._fail(f"the loss must return a scalar (0-dim) tensor, got shape {_shape(value)}; "
                             "reduce it, e.g. with .mean()")
        if not value.is_floating_point():
            raise self._fail(f"the loss must return a floating-point tensor, got {value.dtype}")
        if not torch.isfinite(value.detach()).item():
            raise self._fail(f"the loss is not finite ({value.item()}) on the first {which} batch")

    def _check_picklable(self) -> None:
        for what, obj in (("model factory", self.model), ("loss", self.loss), ("augment", self.augment)):
            try:
                pickle.dumps(obj)
            except Exception as exc:  # noqa: BLE001
                raise self._fail(
                    f"the {what} {getattr(obj, '__qualname__', type(obj).__name__)!s} is not picklable "
                    f"({describe_exception(exc)}); model and loss must be module-level functions "
                    "(or functools.partial of them), not lambdas or nested functions") from exc
