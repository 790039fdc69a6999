"""The machinery common to the shared ``torch.optim`` optimizers (:mod:`shmopt.shared.optimizers`).

State.  The constructor eagerly creates ONE arena per optimizer holding one flat float32 buffer
per state name of its rule (``m``, ``v``, ``vmax``, ``momentum_buffer`` or ``sum``; covering every
parameter of every param group, or one value per row of each for a row-wise buffer,
:mod:`shmopt.shared.param_groups`) and an exact step counter;
``opt.state[p]`` holds views of it.  The rule (:mod:`shmopt.rules`) of each param group is
built by the rule itself from the group (:mod:`shmopt.shared.group_rules`).

Processes.  The optimizer pickles *by handle*: pass it to ``mp.Process(args=...)`` (any start
method) and the child attaches to the same arena, untracked; only the creating process unlinks
(``close()``, or when it is garbage collected / at exit; :mod:`shmopt.shared.lifecycle`).  Its
parameters must be shared too: those of a :class:`~shmopt.shared.SharedModel` travel as
references to the model's arena, other tensors must be in torch shared memory
(``model.share_memory()``), else pickling raises :class:`~shmopt.shared.SharingError` (a private
copy would silently stop sharing).  A forked child that uses an inherited optimizer becomes an
attachment of its own on its first step.

Step count.  ``t`` is exact under concurrency: per-process single-writer counters summed
(:mod:`shmopt.shared.counters`); each process claims its slot once, when it attaches.  Bias
correction uses the global count including the current step.  ``step_count`` reads it.

Staleness (Zhang et al. 2016).  ``mark_read()`` (called by ``pull_parameters``) records the count
when this process read the parameters; ``tau`` of a step is the count before it minus that
record.  ``lr_policy=LrPolicy("staleness")`` uses ``lr / max(1, tau)``.

One instance is used by one thread; give each process its own (unpickled) copy.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..memory import Layout
from ..rules import RowRule, Rule
from ..strategies.lr import LrPolicy, make_lr_policy
from .counters import StepCounter, counter_specs
from .errors import SharingError
from .group_rules import GroupRules
from .lifecycle import Attachment
from .model import model_of
from .param_groups import bind_state, from_refs, lay_out, param_refs
from .push_pull import params_of
from .torch_state import TORCH_KEYS, export_state, import_state

__all__ = ["SharedOptimizer"]


class SharedOptimizer(torch.optim.Optimizer):
    """Common machinery; subclasses name their ``rule_class`` and pass their defaults."""

    rule_class: ClassVar[type[Rule] | None]
    #: the rule of sparse gradients (None: refused with ``_sparse_refusal``)
    row_class: ClassVar[type[RowRule] | None] = None
    #: without a dense rule: dense gradients go to the row rule as every row touched, or are refused
    _dense_rows: ClassVar[bool] = True
    _sparse_refusal: ClassVar[str] = "this optimizer does not support sparse gradients"
    _dense_refusal: ClassVar[str] = "this optimizer does not support dense gradients"
    #: group keys that must equal the defaults (they decide which state buffers exist)
    _structural: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, defaults: dict[str, Any], max_processes: int,
                 lr_policy: LrPolicy | str | None) -> None:
        self._hold: Attachment | None = None
        super().__init__(params, defaults)
        self._configure(max_processes, lr_policy)
        specs = self._rules.specs(self._groups)
        names = sorted(specs, key=list(TORCH_KEYS).index)
        total = self._groups[-1].end if self._groups else 0
        rows = self._groups[-1].row_offsets[-1] if self._groups else 0
        hold = Attachment.create(Layout.build([(k, (rows if specs[k] else total,), np.float32) for k in names]
                                              + counter_specs(max_processes)))
        try:
            self._bind(hold)
            self._rules.init(self._groups)
        except BaseException:
            hold.close()
            raise

    # ------------------------------------------------------------------------ set-up
    def _configure(self, max_processes: int, lr_policy: LrPolicy | str | None) -> None:
        counter_specs(max_processes)             # validates
        if isinstance(lr_policy, str):
            lr_policy = make_lr_policy(lr_policy)
        if lr_policy is not None and (not isinstance(lr_policy, LrPolicy) or lr_policy.needs_distance):
            raise ConfigError(f"invalid lr_policy={lr_policy!r}: use an LrPolicy that needs no parameter "
                              f"distance ('constant' or 'staleness')")
        self._max_processes, self._lr_policy = max_processes, lr_policy
        self._rules = GroupRules(self.rule_class, self.defaults, self._structural, self.row_class,
                                 dense_rows=self._dense_rows, sparse_refusal=self._sparse_refusal,
                                 dense_refusal=self._dense_refusal)
        self._groups = lay_out(self.param_groups)
        for gi in range(len(self._groups)):
            self._rule_of(gi)                    # validates the hyper-parameters
        self._read_at: int | None = None
        self.staleness = 0                      # tau of this process's last step

    def _bind(self, hold: Attachment) -> None:
        """Make the state views, claim a step-counter slot, register with the shared models."""
        self._hold = hold
        names = [e.name for e in hold.arena.layout.entries if e.name in TORCH_KEYS]
        self._rules.state_names = frozenset(names)
        self._row_wise = frozenset(k for k, rw in self._rules.specs(self._groups).items() if rw)
        bind_state(self.param_groups, self._groups, {k: hold.arena.tensor(k) for k in names},
                   TORCH_KEYS, self.state, self._row_wise)
        self._counter: StepCounter | None = self._claim_slot()
        for p in self._all_params():
            found = model_of(p)
            if found is not None:
                found[0].add_reader(self)

    def _claim_slot(self, adopt: bool = False) -> StepCounter:
        """A step-counter slot of this process (``adopt``: first make an inherited hold ours)."""
        counter = StepCounter(self._hold.arena)  # raises when every slot is held by a live process
        if adopt:
            self._hold.adopt_after_fork()        # the inherited slot stays the parent's
        self._hold.on_close(counter.release)
        return counter

    def _rule_of(self, gi: int) -> Rule:
        return self._rules.rule_of(gi, self.param_groups[gi], self._groups[gi])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_hold", None) is not None:
            raise ConfigError("shared optimizers allocate their state when created: pass every param "
                              "group to the constructor")
        super().add_param_group(param_group)

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # -------------------------------------------------------------------------- steps
    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the parameters' gradients **in place** by default (``set_to_none=False``, as torch
        did before 2.0; ``torch.optim`` now defaults to True).

        Why: A3C templates alias ``shared_param._grad = local_param.grad`` once (their
        ``ensure_shared_grads`` returns as soon as a shared ``.grad`` exists) and count on
        ``optimizer.zero_grad()`` to zero that tensor, the local model's gradient, before each
        backward pass.  Set to None, the shared ``.grad`` is re-aliased but the local gradient
        is never zeroed, and each step applies the sum of every gradient so far.  In place, each
        step applies its own gradient.  ``set_to_none=True`` gives torch's default; then a
        parameter without a gradient is skipped by the next step, whereas zeroed it is updated
        with a zero gradient (momentum still moves it).  ``step_from`` needs neither.
        """
        super().zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update with the parameters' ``.grad`` (parameters without one are skipped)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update([[p.grad for p in group["params"]] for group in self.param_groups])
        return loss

    @torch.no_grad()
    def step_from(self, local: nn.Module | Iterable[Tensor], *, consume: bool = True) -> None:
        """One update with the gradients of ``local`` (a model of the same architecture, or its
        parameters, in the order of this optimizer's parameters), read directly: no ``.grad``
        aliasing, no shared gradient buffer.  ``consume=True`` then sets ``local``'s gradients
        to None, so each gradient is applied exactly once."""
        lparams = params_of(local)
        mine = self._all_params()
        if len(lparams) != len(mine) or any(a.shape != b.shape for a, b in zip(lparams, mine)):
            raise ConfigError("step_from(): the local parameters must match the optimizer's parameters "
                              f"one to one (got {len(lparams)}, expected {len(mine)} of the same shapes)")
        grads, i = [], 0
        for group in self.param_groups:
            grads.append([lp.grad for lp in lparams[i:i + len(group["params"])]])
            i += len(group["params"])
        self._update(grads)
        if consume:
            for lp in lparams:
                lp.grad = None

    def _update(self, grads: list[list[Tensor | None]]) -> None:
        hold = self._open()
        if not any(g is not None for gs in grads for g in gs):
            return
        if hold.forked:                          # forked child that inherited this object
            self._counter = self._claim_slot(adopt=True)
        for gi, (group, g) in enumerate(zip(self.param_groups, self._groups)):
            for j, p in enumerate(group["params"]):
                if p.data_ptr() != g.ptrs[j]:
                    raise SharingError(f"parameter {j} of param group {gi} was moved out of shared memory "
                                       f"(share_memory_(), .data = ..., .to(), load_state_dict(assign=True) "
                                       f"or SharedModel.close()): its updates would not be shared")
        grads = [[-x if x is not None and group.get("maximize") else x for x in gs]      # ascend: -g
                 for group, gs in zip(self.param_groups, grads)]
        counter = self._counter
        t = counter.increment()
        tau = 0 if self._read_at is None else max(0, t - 1 - self._read_at)
        counter.record_staleness(tau)
        self.staleness = tau
        self._rules.apply(self.param_groups, self._groups, grads, t, self._lr_policy, tau)

    # ---------------------------------------------------------------------- counters
    def mark_read(self) -> None:
        """Record that this process read the shared parameters now (staleness reference)."""
        if self._counter is not None:
            self._read_at = self._counter.total()

    @property
    def step_count(self) -> int:
        """The exact number of updates applied by every process (plus a loaded step count)."""
        self._open()
        return self._counter.total()

    @property
    def process_steps(self) -> int:
        """Updates applied through this object."""
        return 0 if self._counter is None else self._counter.local

    def stats(self) -> dict[str, int]:
        """Global counters: steps, slots that counted steps (a slot is reused once its process
        has ended), staleness sum and max."""
        self._open()
        return self._counter.stats()

    @property
    def owner(self) -> bool:
        return self._hold is not None and self._hold.owner

    @property
    def name(self) -> str | None:
        """Name of the arena (the shared-memory segment), None once closed."""
        return None if self._hold is None else self._hold.name

    def share_memory(self) -> "SharedOptimizer":
        """No-op (the state is shared already); kept for A3C-style code."""
        return self

    # -------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """torch's format (:mod:`shmopt.shared.torch_state`), private copies of the state."""
        self._open()
        return export_state(self.param_groups, self._groups, self.step_count, self._row_wise)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy a state dict (ours or torch's) *into* the shared buffers and set the step count.

        Parameters with no saved state get zero state. Not atomic against concurrent steps."""
        self._open()
        count = import_state(self.param_groups, self._groups, state_dict, self._rules.loadable)
        for gi in range(len(self.param_groups)):
            self._rule_of(gi)
        self._counter.set_total(count)

    # --------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        if self._hold is None or self._hold.closed:
            raise SharingError("cannot pickle a closed shared optimizer")
        return {"handle": self._hold.handle, "defaults": self.defaults,
                "groups": param_refs(self.param_groups), "max_processes": self._max_processes,
                "lr_policy": self._lr_policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._hold = None
        torch.optim.Optimizer.__init__(self, from_refs(state["groups"]), state["defaults"])
        self._configure(state["max_processes"], state["lr_policy"])
        hold = Attachment.attach(state["handle"])
        try:
            self._bind(hold)
        except BaseException:
            hold.close()
            raise

    def __deepcopy__(self, memo: dict) -> Any:
        raise TypeError("a shared optimizer cannot be deep-copied: pickle it to another process (it "
                        "re-attaches to the same shared state) or create a new one")

    # -------------------------------------------------------------------- lifecycle
    def _open(self) -> Attachment:
        if self._hold is None or self._hold.closed:
            raise SharingError("the shared optimizer is closed")
        return self._hold

    def close(self) -> None:
        """Free this process's counter slot and detach; the creating process also unlinks the
        segment.  Idempotent.  Other processes keep their mapping until they close."""
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self.state.clear()
        for g in self._groups:
            g.clear()
        self._counter = None
        hold.close()

    def __enter__(self) -> "SharedOptimizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
