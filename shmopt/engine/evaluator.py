"""The evaluator: the objective of the shared parameters on the eval data, in the supervisor.

It owns a private copy of the model whose parameters are views of one private flat buffer; an
evaluation copies the flat parameters in (from any device) and runs the user's loss under
``no_grad`` and in eval mode, with one thread, so it steals little from the workers. An exception
in the user's loss is reported like a worker failure (what, where, traceback).
"""
from __future__ import annotations

import os
import traceback

import torch

from ..errors import WorkerError
from ..memory.flat import bind_buffers, bind_params, buffers_numel
from ..problems import Problem


class Evaluator:
    def __init__(self, problem: Problem, model: torch.nn.Module, n_params: int, eval_samples: int) -> None:
        self._loss, self._metrics = problem.loss, problem.metrics
        self._data = tuple(t[:eval_samples] for t in problem.eval_data())
        self._x = torch.empty(n_params)
        self.model = model
        bind_params(model, self._x, copy=True)     # the template keeps its initial values
        self._b = torch.empty(buffers_numel(model))
        bind_buffers(model, self._b, copy=True)

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
            raise WorkerError(f"the evaluation in the supervisor (pid {os.getpid()}) raised "
                              f"{type(exc).__name__}: {exc}", -1, os.getpid(), None,
                              traceback.format_exc()) from exc
        finally:
            self.model.train(training)
            torch.set_num_threads(threads)

    def final_model(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> torch.nn.Module:
        """The evaluation model, now holding a private copy of ``x`` and of the module buffers
        (the trained model, BatchNorm statistics included)."""
        bind_params(self.model, x.detach().to("cpu", copy=True))
        if buffers is not None:
            bind_buffers(self.model, buffers.detach().to("cpu", copy=True))
        self._data = ()
        return self.model
