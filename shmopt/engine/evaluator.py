"""The evaluator: the objective of the shared parameters on the eval data, in the supervisor.

It owns a private copy of the model whose dense parameters are views of one private flat buffer;
an evaluation copies them in (from any device), makes the model's tables (parameters with sparse
gradients) views of their blocks of the given parameters (the arena's, read lock-free in place as
a worker does: no copy of a table) and runs the user's loss and metrics under ``no_grad``, in
eval mode and with one thread, so it steals little from the workers; the two share one forward
pass (:func:`_forward_once`). An exception
in the user's loss is reported like a worker failure (what, where, traceback).
"""
from __future__ import annotations

import os
import traceback
from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import WorkerError
from ..memory.flat import bind_buffers, bind_params, buffers_numel
from ..memory.tables import attach_table
from ..problems import Problem
from ..table_plan import index_error, table_views


@contextmanager
def _forward_once(model: torch.nn.Module) -> Iterator[None]:
    """One forward pass per evaluation: while it lasts, the model's output for the same input
    tensors (the eval data, given to the loss and then to the metrics) is computed once and
    reused. In eval mode under no_grad a forward has no effect to repeat; other inputs (or
    keyword arguments) run as usual."""
    forward, seen = model.forward, {}

    def once(*args, **kwargs):
        if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            return forward(*args, **kwargs)
        key = tuple((id(a), a.data_ptr(), a.shape, a.stride()) for a in args)
        if key not in seen:                  # the inputs are kept: no id is reused meanwhile
            seen[key] = (args, forward(*args))
        return seen[key][1]

    model.forward = once
    try:
        yield
    finally:
        del model.forward


class Evaluator:
    def __init__(self, problem: Problem, model: torch.nn.Module, n_params: int, eval_samples: int,
                 tables: tuple = ()) -> None:
        self._loss, self._metrics = problem.loss, problem.metrics
        self._data = problem.eval_rows.head(eval_samples)
        self._x = torch.empty(n_params)
        self._specs = tables                        # the model's tables (table_plan.Table)
        self._tables: list[str] = []                # names of the tables now views of the arena
        self.model = model
        bind_params(model, self._x, copy=True)     # the template keeps its initial values
        self._b = torch.empty(buffers_numel(model))
        bind_buffers(model, self._b, copy=True)

    def initial_params(self) -> torch.Tensor:
        """The template's dense parameters, flat (what the arena's x starts with)."""
        return self._x.clone()

    def read_tables(self, x: torch.Tensor, copy: bool = False) -> None:
        """Make the model's tables views of (``copy``: private copies of) their blocks of ``x``."""
        for t, view in zip(self._specs, table_views(self._specs, x)):
            attach_table(self.model, t.name, view.detach().to("cpu", copy=True) if copy else view)
        self._tables = [] if copy else [t.name for t in self._specs]

    def release_tables(self) -> None:
        """Drop the views of the arena's tables (they become storage-less meta tensors)."""
        for name in self._tables:
            attach_table(self.model, name, torch.empty(self.model.get_parameter(name).shape, device="meta"))
        self._tables = []

    def initial_buffers(self) -> torch.Tensor:
        """The template's floating-point buffers, flat (what the arena's buffers start from)."""
        return self._b.clone()

    def loss(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> float:
        """Objective of the given flat parameters (dense, then the tables) on the eval data."""
        return self.evaluate(x, buffers, metrics=False)[0]

    def evaluate(self, x: torch.Tensor, buffers: torch.Tensor | None = None,
                 metrics: bool = True) -> tuple[float, dict[str, float] | None]:
        """(objective, the problem's metrics or None) of the flat parameters (and module buffers,
        when given) on the eval data, in eval mode."""
        self._x.copy_(x[:self._x.numel()])
        self.read_tables(x)
        if buffers is not None:
            self._b.copy_(buffers)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), _forward_once(self.model):
                loss = float(self._loss(self.model, self._data))
                found = None
                if metrics and self._metrics is not None:
                    found = {k: float(v) for k, v in self._metrics(self.model, self._data).items()}
                return loss, found
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, IndexError) and self._specs:
                what = str(index_error(self._specs, exc))
            raise WorkerError(f"the evaluation in the supervisor (pid {os.getpid()}) raised {what}", -1,
                              os.getpid(), None, traceback.format_exc()) from exc
        finally:
            self.model.train(training)
            torch.set_num_threads(threads)

    def final_model(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> torch.nn.Module:
        """The evaluation model, now holding a private copy of ``x`` and of the module buffers
        (the trained model, BatchNorm statistics included)."""
        bind_params(self.model, x[:self._x.numel()].detach().to("cpu", copy=True))
        self.read_tables(x, copy=True)            # the trained tables, copied out of the arena
        if buffers is not None:
            bind_buffers(self.model, buffers.detach().to("cpu", copy=True))
        self._data = ()
        return self.model
