"""The engine's checkpoints (a part of :class:`~shmopt.engine.supervisor.Engine`): what a
checkpoint must share with a run to be resumed by it, and writing one (paused or quiescent), to
the run's checkpoint files (:mod:`.checkpoint_files`) or to a given path."""
from __future__ import annotations

import numpy as np
import torch

from ..memory import Arena
from . import checkpoint, reshard
from .layout import Buffers
from .model_view import the_model


class Checkpointing:
    """Mixed into the Engine, whose fields it reads (plan, buffers, group, arena, record, ...)."""

    def _ckpt_identity(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it."""
        p = self.plan
        return {"algo": p.algo, "rule": p.rule.name, "protocol": p.protocol, "variant": p.variant,
                "k": p.k, "workers": p.workers, "parameters": self.n_params,
                "model": checkpoint.model_signature(self._template),
                "data": self._data_fingerprint()}

    def _data_fingerprint(self) -> str:
        if not hasattr(self, "_fingerprint"):    # a data file is sampled, a dataset's items are read once
            self._fingerprint = self._rows.fingerprint()
        return self._fingerprint

    def write_checkpoint(self, pause: bool = True, path: str | None = None,
                         final: bool = False) -> str | None:
        """Write the whole shared state (to ``path``, else the run's checkpoint files: rotated, with
        a sidecar; a failed write is a warning and training goes on). With ``pause`` the processes
        first stop at a consistent point (between updates) and wait until the file is written.
        The path written, or None when the run's checkpoint could not be written."""
        glob = self.buffers.glob
        if pause:
            glob["pause"] = 1
            self.group.wait_paused(self.plan.supervisor.heartbeat_timeout)
        try:
            meta = dict(self._ckpt_identity(), config=self.plan.options, seed=self.plan.worker.seed,
                        updates=self.updates(),
                        problem={"source": self.source, "options": self.problem_options})
            if path is not None or self._ckpt_files is None:
                path = path or self.plan.supervisor.checkpoint
                checkpoint.save(path, self.arena, meta, skip=self._ckpt_skip)
            else:
                last = self.record.history[-1].loss if self.record.history else None
                ok = self._ckpt_files.write(lambda target: checkpoint.save(target, self.arena, meta,
                                                                           skip=self._ckpt_skip),
                                            {**meta, "loss": last}, final=final)
                self.record.checkpoint_failures = self._ckpt_files.failures
                path = self._ckpt_files.path if ok else None
                if not ok:
                    return None
            self.record.checkpoints += 1
        finally:
            glob["pause"] = 0
        return path


    def restored(self) -> tuple[torch.nn.Module, dict[str, np.ndarray], int]:
        """The checkpoint this engine was made to resume (``resume=``), without starting a process:
        (the model it holds, as the run would hand it back; the rule's state of the dense
        parameters by the rule's names, private copies; the update count)."""
        if self._resume_doc is None:
            raise RuntimeError("restored() needs an engine made with resume=CHECKPOINT")
        arena = Arena.create(self.layout)
        try:
            b = Buffers.of(arena, self.plan)
            (reshard.restore(self._resume_doc, arena, self.plan) if self._reshard
             else checkpoint.restore(self._resume_doc, arena))
            P, leader = self.plan.workers, None
            if self.plan.replicas is not None:
                leader = self.plan.replicas.leader(b.ctrl["losses"][:P], b.ctrl["loss_count"][:P])
            model = self.evaluator.final_model(*the_model(self.plan, b, leader))
            row = 0 if self.plan.replicas is not None and leader is None else leader
            state = {k: (v[row] if self.plan.replicas is not None else v).numpy().copy()
                     for k, v in b.state.items()}
            return model, state, int(self._resume_doc.get("updates") or 0)
        finally:
            b = None
            arena.close()
