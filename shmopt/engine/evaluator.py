"""The evaluator: the objective of the shared parameters on the eval data, in the supervisor.

It owns a private copy of the model whose parameters are views of one private flat buffer, and
whose tables (parameters with sparse gradients) are views of the arena's tables; an evaluation
copies the flat parameters in (from any device), reads the tables in place (lock-free, as a
worker does) and runs the user's loss under
``no_grad`` and in eval mode, with one thread, so it steals little from the workers. An exception
in the user's loss is reported like a worker failure (what, where, traceback).
"""
from __future__ import annotations

import os
import traceback

import torch

from ..errors import WorkerError
from ..memory.flat import bind_buffers, bind_params, buffers_numel
from ..memory.tables import attach_table
from ..problems import Problem
from ..table_plan import index_error


class Evaluator:
    def __init__(self, problem: Problem, model: torch.nn.Module, n_params: int, eval_samples: int) -> None:
        self._loss, self._metrics = problem.loss, problem.metrics
        self._data = tuple(t[:eval_samples] for t in problem.eval_data())
        self._x = torch.empty(n_params)
        self._tables: list[str] = []                # names of the tables read in place from the arena
        self._specs: tuple = ()                     # and their sizes (table_plan.Table)
        self.model = model
        bind_params(model, self._x, copy=True)     # the template keeps its initial values
        self._b = torch.empty(buffers_numel(model))
        bind_buffers(model, self._b, copy=True)

    def initial_params(self) -> torch.Tensor:
        """The template's dense parameters, flat (what the arena's x starts from)."""
        return self._x.clone()

    def attach_tables(self, tables: tuple, views: tuple[torch.Tensor, ...]) -> None:
        """Read the tables (plan.tables) in place from their arena buffers ``views``."""
        self._specs = tables
        self._tables = [t.name for t in tables]
        for name, view in zip(self._tables, views):
            attach_table(self.model, name, view)

    def release_tables(self) -> None:
        """Drop the views of the arena's tables (they become storage-less meta tensors)."""
        for name in self._tables:
            attach_table(self.model, name, torch.empty(self.model.get_parameter(name).shape, device="meta"))
        self._tables = []

    def initial_buffers(self) -> torch.Tensor:
        """The template's floating-point buffers, flat (what the arena's buffers start from)."""
        return self._b.clone()

    def loss(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> float:
        """Objective of the given flat parameters on the eval data (private copy, no grad)."""
        return self.evaluate(x, buffers, metrics=False)[0]

    def evaluate(self, x: torch.Tensor, buffers: torch.Tensor | None = None,
                 metrics: bool = True) -> tuple[float, dict[str, float] | None]:
        """(objective, the problem's metrics or None) of the flat parameters (and module buffers,
        when given) on the eval data, in eval mode."""
        self._x.copy_(x)
        if buffers is not None:
            self._b.copy_(buffers)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
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
        bind_params(self.model, x.detach().to("cpu", copy=True))
        for name in self._tables:                  # the trained tables, copied out of the arena
            attach_table(self.model, name, self.model.get_parameter(name).detach().to("cpu", copy=True))
        self._tables = []
        if buffers is not None:
            bind_buffers(self.model, buffers.detach().to("cpu", copy=True))
        self._data = ()
        return self.model
