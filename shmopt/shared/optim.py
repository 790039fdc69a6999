r"""``torch.optim`` optimizers whose whole state lives in shmopt shared memory (the A3C pattern).

:class:`SharedAdam`, :class:`SharedAMSGrad` and :class:`SharedSGD` are ``torch.optim.Optimizer``
subclasses for processes the user starts himself (``torch.multiprocessing``).  The constructor
eagerly creates ONE arena per optimizer holding one flat float32 buffer per state name (``m``,
``v``, ``vmax`` or ``momentum_buffer``; 64-byte aligned, covering every parameter of every param
group) and an exact step counter; ``opt.state[p]`` holds views of it.  The update math is the
shmopt rule (:mod:`shmopt.rules`: torch's fused Adam kernel, SGD with torch semantics), run on each
parameter's slice or, when a group's parameters are consecutive views of one flat buffer (as
after :func:`shmopt.shared.share`), once over the whole group::

    Adam/AMSGrad (Kingma & Ba 2015; Reddi et al. 2018), t = global step count:
        m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  vhat <- max(vhat, v) | v
        x <- x - lr/(1-b1^t) * m / (sqrt(vhat)/sqrt(1-b2^t) + eps)
    SGD (Polyak 1964 momentum; Sutskever et al. 2013 Nesterov), torch.optim.SGD semantics.

Processes.  The optimizer pickles *by handle*: pass it to ``mp.Process(args=...)`` (any start
method) and the child attaches to the same arena, untracked; only the creating process unlinks
(``close()``, or when it is garbage collected / at exit).  Its parameters must be shared too:
those of a :class:`~shmopt.shared.SharedModel` travel as references to the model's arena, other
tensors must be in torch shared memory (``model.share_memory()``), else pickling raises
:class:`~shmopt.shared.SharingError` (a private copy would silently stop sharing).

Step count.  ``t`` is exact under concurrency: per-process single-writer counters summed
(:mod:`shmopt.shared.counters`); each process claims its slot once, when it attaches.  Bias
correction uses the global count including the current step.  ``step_count`` reads it.

Staleness (Zhang et al. 2016).  ``mark_read()`` (called by ``pull_parameters``) records the count
when this process read the parameters; ``tau`` of a step is the count before it minus that
record.  ``lr_policy=LrPolicy("staleness")`` uses ``lr / max(1, tau)``.

``state_dict()`` has torch's format (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
``momentum_buffer``, ``step`` per parameter; ``param_groups``) and ``load_state_dict()`` copies
*into* the shared buffers, so every process sees the loaded state (torch's own would swap in
private tensors).  One instance is used by one thread; give each process its own (unpickled) copy.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.arena import Arena, Layout
from ..errors import ConfigError
from ..rules import SGD, Adam, Rule
from ..strategies.lr import LrPolicy, make_lr_policy
from .counters import StepCounter, counter_specs
from .model import _ATTACHED, SharedModel, SharingError, _params_of

__all__ = ["SharedAdam", "SharedAMSGrad", "SharedSGD"]

#: shmopt rule state name -> torch.optim state key
TORCH_KEYS = {"m": "exp_avg", "v": "exp_avg_sq", "vmax": "max_exp_avg_sq",
              "momentum_buffer": "momentum_buffer"}


def _chain(tensors: list[Tensor], n: int) -> Tensor | None:
    """A 1-D view of ``n`` floats if ``tensors`` are consecutive contiguous float32 views of one
    storage (in order), else None."""
    first = tensors[0]
    base, off = first.data_ptr(), 0
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.data_ptr() != base + 4 * off:
            return None
        off += t.numel()
    storage = first.untyped_storage()
    if storage.nbytes() < 4 * (first.storage_offset() + n):
        return None
    return torch.empty(0).set_(storage, first.storage_offset(), (n,), (1,))


@dataclass
class _Group:
    """Per-param-group bookkeeping of this process (views of the shared buffers)."""

    start: int
    end: int
    offsets: list[int]
    flat: Tensor | None                      # the group's parameters as one view, if chained
    state: dict[str, Tensor]                 # the group's slice of each state buffer
    pstate: list[dict[str, Tensor]]          # each parameter's slice
    rule: Rule | None = None
    key: tuple = ()
    scratch: Tensor | None = None            # private flat gradient when grads are not chained
    ptrs: list[int] = field(default_factory=list)


def _release(arena: Arena, counter: StepCounter | None, owner: bool, pid: int) -> None:
    """Finalizer (must not reference the optimizer): free the slot, detach, unlink (owner)."""
    if counter is not None:
        counter.release()
    arena.close(unlink=owner and os.getpid() == pid)


class _SharedOptimizer(torch.optim.Optimizer):
    """Common machinery; subclasses define ``_hyper`` and :meth:`_make_rule`."""

    _hyper: ClassVar[tuple[str, ...]]        # group keys (besides lr) that define the rule

    def __init__(self, params: Any, defaults: dict[str, Any], max_processes: int,
                 lr_policy: LrPolicy | str | None) -> None:
        self._arena: Arena | None = None
        super().__init__(params, defaults)
        self._configure(max_processes, lr_policy)
        names = sorted({k for g in self._groups for k in g.rule.state_names}, key=list(TORCH_KEYS).index)
        total = self._groups[-1].end if self._groups else 0
        layout = Layout.build([(k, (total,), np.float32) for k in names] + counter_specs(max_processes))
        arena = Arena.create(layout)
        try:
            self._bind(arena, owner=True)
            for g in self._groups:
                g.rule.init(g.state)
        except BaseException:
            arena.close()
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
        self._state_names = None
        self._groups: list[_Group] = []
        start = 0
        for gi, group in enumerate(self.param_groups):
            offsets = [start]
            for p in group["params"]:
                if p.dtype != torch.float32 or p.device.type != "cpu" or p.is_sparse or not p.is_contiguous():
                    raise ConfigError(f"param group {gi}: shared optimizers take dense contiguous float32 "
                                      f"CPU parameters, got {p.dtype} on {p.device}")
                offsets.append(offsets[-1] + p.numel())
            n = offsets[-1] - start
            flat = _chain(group["params"], n) if group["params"] else None
            ptrs = [p.data_ptr() for p in group["params"]]
            g = _Group(start, offsets[-1], offsets, flat, {}, [], ptrs=ptrs)
            self._groups.append(g)
            self._rule_of(gi)                    # validates the hyper-parameters
            start = offsets[-1]
        self._read_at: int | None = None
        self.staleness = 0                      # tau of this process's last step

    def _bind(self, arena: Arena, owner: bool) -> None:
        """Make the state views, claim a step-counter slot, register the finalizer."""
        self._arena = arena
        self._pid = os.getpid()
        self._owner = owner
        names = [e.name for e in arena.layout.entries if e.name in TORCH_KEYS]
        self._state_names = frozenset(names)
        bufs = {k: arena.tensor(k) for k in names}
        for group, g in zip(self.param_groups, self._groups):
            g.state = {k: b[g.start:g.end] for k, b in bufs.items()}
            g.pstate = []
            for p, a, b in zip(group["params"], g.offsets, g.offsets[1:]):
                views = {k: buf[a:b] for k, buf in bufs.items()}
                g.pstate.append(views)
                self.state[p] = {TORCH_KEYS[k]: v.view_as(p) for k, v in views.items()}
        self._counter = StepCounter(arena)      # raises when every slot is held by a live process
        self._finalizer = weakref.finalize(self, _release, arena, self._counter, owner, self._pid)
        for p in self._all_params():
            shared = self._model_of(p)
            if shared is not None:
                shared[0]._add_reader(self)

    def _rule_of(self, gi: int) -> Rule:
        group, g = self.param_groups[gi], self._groups[gi]
        key = tuple(group[k] for k in self._hyper)
        if g.rule is None or key != g.key:
            lr = group["lr"]
            if float(lr) < 0:
                raise ConfigError(f"invalid lr={lr!r}: must be >= 0")
            rule = self._make_rule(group)
            if self._state_names is not None and not set(rule.state_names) <= self._state_names:
                raise ConfigError(f"param group {gi} now needs the state {rule.state_names}, which was not "
                                  f"allocated at creation (e.g. momentum switched on): create the optimizer "
                                  f"with these hyper-parameters")
            g.rule, g.key = rule, key
        return g.rule

    def _make_rule(self, group: dict[str, Any]) -> Rule:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_arena", None) is not None:
            raise ConfigError("shared optimizers allocate their state when created: pass every param "
                              "group to the constructor")
        super().add_param_group(param_group)

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @staticmethod
    def _model_of(p: Tensor) -> tuple[SharedModel, int] | None:
        for shared in list(_ATTACHED.values()):
            i = shared.index_of(p)
            if i is not None and not shared.closed:
                return shared, i
        return None

    # -------------------------------------------------------------------------- steps
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
        lparams = _params_of(local)
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
        if self._arena is None:
            raise SharingError("the shared optimizer is closed")
        if not any(g is not None for gs in grads for g in gs):
            return
        if os.getpid() != self._pid:             # forked child that inherited this object
            self._refork()
        for gi, (group, g) in enumerate(zip(self.param_groups, self._groups)):
            for j, p in enumerate(group["params"]):
                if p.data_ptr() != g.ptrs[j]:
                    raise SharingError(f"parameter {j} of param group {gi} was moved out of shared memory "
                                       f"(share_memory_(), .data = ..., .to(), load_state_dict(assign=True) "
                                       f"or SharedModel.close()): its updates would not be shared")
        counter = self._counter
        t = counter.increment()
        tau = 0 if self._read_at is None else max(0, t - 1 - self._read_at)
        counter.record_staleness(tau)
        self.staleness = tau
        for gi, (group, g) in enumerate(zip(self.param_groups, self._groups)):
            gs = grads[gi]
            if not gs:
                continue
            rule = self._rule_of(gi)
            lr = float(group["lr"])
            if self._lr_policy is not None:
                lr = self._lr_policy(lr, tau)
            if g.flat is not None and all(x is not None for x in gs):
                rule.update(g.flat, self._flat_grad(g, gs), g.state, t, lr)
                continue
            for p, x, st in zip(group["params"], gs, g.pstate):
                if x is not None:
                    if x.is_sparse:
                        raise ConfigError("shared optimizers do not support sparse gradients")
                    rule.update(p.view(-1), x.reshape(-1).float(), st, t, lr)

    @staticmethod
    def _flat_grad(g: _Group, gs: list[Tensor]) -> Tensor:
        n = g.end - g.start
        view = _chain(gs, n)
        if view is not None:
            return view
        if g.scratch is None:
            g.scratch = torch.empty(n)
        for x, a, b in zip(gs, g.offsets, g.offsets[1:]):
            if x.is_sparse:
                raise ConfigError("shared optimizers do not support sparse gradients")
            g.scratch[a - g.start:b - g.start].copy_(x.reshape(-1))
        return g.scratch

    def _refork(self) -> None:
        self._counter = StepCounter(self._arena)    # the inherited slot stays the parent's
        self._finalizer.detach()
        self._owner, self._pid = False, os.getpid()
        self._finalizer = weakref.finalize(self, _release, self._arena, self._counter, False, self._pid)

    # ---------------------------------------------------------------------- counters
    def mark_read(self) -> None:
        """Record that this process read the shared parameters now (staleness reference)."""
        if self._counter is not None:
            self._read_at = self._counter.total()

    @property
    def step_count(self) -> int:
        """The exact number of updates applied by every process (plus a loaded step count)."""
        if self._counter is None:
            raise SharingError("the shared optimizer is closed")
        return self._counter.total()

    @property
    def process_steps(self) -> int:
        """Updates applied through this object."""
        return 0 if self._counter is None else self._counter.local

    def stats(self) -> dict[str, int]:
        """Global counters: steps, slots that counted steps (a slot is reused once its process
        has ended), staleness sum and max."""
        if self._counter is None:
            raise SharingError("the shared optimizer is closed")
        return self._counter.stats()

    @property
    def owner(self) -> bool:
        return bool(self._arena is not None and self._owner and os.getpid() == self._pid)

    @property
    def name(self) -> str | None:
        """Name of the arena (the shared-memory segment), None once closed."""
        return None if self._arena is None else self._arena.name

    def share_memory(self) -> "_SharedOptimizer":
        """No-op (the state is shared already); kept for A3C-style code."""
        return self

    # -------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        if self._arena is None:
            raise SharingError("the shared optimizer is closed")
        step = torch.tensor(float(self.step_count))
        state, groups, idx = {}, [], 0
        for group, g in zip(self.param_groups, self._groups):
            ids = []
            for p, views in zip(group["params"], g.pstate):
                state[idx] = {"step": step.clone(),
                              **{TORCH_KEYS[k]: v.clone().view_as(p) for k, v in views.items()}}
                ids.append(idx)
                idx += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy a state dict (ours or torch's) *into* the shared buffers and set the step count.

        Parameters with no saved state get zero state. Not atomic against concurrent steps."""
        if self._arena is None:
            raise SharingError("the shared optimizer is closed")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("loaded state dict does not match the optimizer's param groups (number of "
                             "groups or of parameters per group)")
        for saved in saved_groups:
            if saved.get("maximize") or saved.get("decoupled_weight_decay"):
                raise ConfigError("cannot load a state dict saved with maximize=True or decoupled weight "
                                  "decay (AdamW): the shared optimizers do not implement them")
        saved_state = state_dict["state"]
        steps, has_state = [], False
        for group, g, saved in zip(self.param_groups, self._groups, saved_groups):
            for _p, views, pid in zip(group["params"], g.pstate, saved["params"]):
                st = saved_state.get(pid, {})
                for k, v in views.items():
                    value = st.get(TORCH_KEYS[k])
                    if value is None:
                        v.zero_()
                        continue
                    if value.numel() != v.numel():
                        raise ValueError(f"state {TORCH_KEYS[k]!r} of parameter {pid} has {value.numel()} "
                                         f"elements, the parameter {v.numel()}")
                    v.copy_(value.reshape(-1))
                    has_state = True
                if "step" in st:
                    steps.append(int(float(st["step"])))
        for group, saved in zip(self.param_groups, saved_groups):
            for k in ("lr",) + self._hyper:
                if k in saved and k not in self._structural:
                    group[k] = tuple(saved[k]) if isinstance(saved[k], list) else saved[k]
        for gi in range(len(self.param_groups)):
            self._rule_of(gi)
        self._counter.set_total(max(steps) if steps else int(has_state))

    _structural: ClassVar[tuple[str, ...]] = ()

    # --------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        if self._arena is None:
            raise SharingError("cannot pickle a closed shared optimizer")
        groups = []
        for gi, group in enumerate(self.param_groups):
            refs = []
            for j, p in enumerate(group["params"]):
                found = self._model_of(p)
                if found is not None:
                    found[0].check()
                    refs.append(("model", found[0], found[1]))
                elif p.is_shared():
                    refs.append(("tensor", p, 0))
                else:
                    raise SharingError(
                        f"parameter {j} of param group {gi} is not in shared memory: a child process would "
                        f"update a private copy. Build the optimizer on shmopt.shared.share(model)"
                        f".parameters() (or call model.share_memory() before creating it)")
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": refs})
        return {"handle": self._arena.handle, "defaults": self.defaults, "groups": groups,
                "max_processes": self._max_processes, "lr_policy": self._lr_policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        groups = []
        for group in state["groups"]:
            params = [obj._params[i] if kind == "model" else obj for kind, obj, i in group["params"]]
            groups.append({**group, "params": params})
        self._arena = None
        torch.optim.Optimizer.__init__(self, groups, state["defaults"])
        self._configure(state["max_processes"], state["lr_policy"])
        arena = Arena.attach(state["handle"])
        try:
            self._bind(arena, owner=False)
        except BaseException:
            arena.close(unlink=False)
            raise

    def __deepcopy__(self, memo: dict) -> Any:
        raise TypeError("a shared optimizer cannot be deep-copied: pickle it to another process (it "
                        "re-attaches to the same shared state) or create a new one")

    # -------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free this process's counter slot and detach; the creating process also unlinks the
        segment.  Idempotent.  Other processes keep their mapping until they close."""
        if self._arena is None:
            return
        self._arena = None
        self.state.clear()
        for g in self._groups:
            g.flat, g.state, g.pstate, g.scratch = None, {}, [], None
        counter, self._counter = self._counter, None
        fin = self._finalizer
        del counter
        fin()

    def __enter__(self) -> "_SharedOptimizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedAdam(_SharedOptimizer):
    """``torch.optim.Adam`` with its state (and an exact step count) in shared memory.

    ``bias_correction=False`` drops both bias corrections; ``lr_policy`` scales the learning
    rate by staleness; ``max_processes`` bounds the processes attached at the same time.
    """

    _hyper = ("betas", "eps", "weight_decay", "amsgrad", "bias_correction")
    _structural = ("amsgrad",)

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 bias_correction: bool = True, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        bias_correction=bias_correction)
        super().__init__(params, defaults, max_processes, lr_policy)

    def _make_rule(self, group: dict[str, Any]) -> Rule:
        if group["amsgrad"] != self.defaults["amsgrad"]:
            raise ConfigError("amsgrad cannot differ between param groups of a shared optimizer")
        return Adam(lr=1.0, betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
                    amsgrad=group["amsgrad"], bias_correction=group["bias_correction"])


class SharedAMSGrad(SharedAdam):
    """AMSGrad (Reddi, Kale, Kumar, ICLR 2018): :class:`SharedAdam` with ``amsgrad=True``;
    ``bias_correction=False`` gives the APAM rule (Xu et al., arXiv 2002.09095)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, bias_correction: bool = True,
                 max_processes: int = 64, lr_policy: LrPolicy | str | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, True, bias_correction=bias_correction,
                         max_processes=max_processes, lr_policy=lr_policy)


class SharedSGD(_SharedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, L2 weight decay) with its momentum
    buffer and step count in shared memory."""

    _hyper = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, max_processes, lr_policy)

    def _make_rule(self, group: dict[str, Any]) -> Rule:
        return SGD(lr=1.0, momentum=group["momentum"], dampening=group["dampening"],
                   nesterov=group["nesterov"], weight_decay=group["weight_decay"])
