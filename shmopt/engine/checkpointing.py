"""The engine's checkpoints (a part of :class:`~shmopt.engine.supervisor.Engine`): what a
checkpoint must share with a run to be resumed by it, and writing one (live, paused for a copy, or
quiescent; in the background: :mod:`.checkpoint_writer`), to the run's checkpoint files
(:mod:`.checkpoint_files`) or to a given path."""
from __future__ import annotations

import time

import numpy as np
import psutil
import torch

from ..memory import Arena
from . import checkpoint, reshard
from .checkpoint_files import size_of
from .control import PAUSE_ALL, PAUSE_APPLIER
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

    def _lock_free(self) -> bool:
        """Whether a running checkpoint needs no pause: the direct protocol's learners (and node
        link) write the shared state without locks, so a read of it while they write is as valid
        as any of theirs. A server's applier and the replica methods change the state in steps
        that a checkpoint must not cut (parameters of version t with moments of t+1, a replica
        half pulled to its leader): those pause. A device arena pauses too (its bytes are copied
        to the host while every process is idle)."""
        return self.plan.protocol == "direct" and self.arena.device.type == "cpu"

    def _applier_alone(self) -> int | None:
        """The rank that alone must pause for a consistent checkpoint, if one does: the applier
        of a server protocol on one machine writes the parameters, the rule state and the update
        count, while its learners write only their gradient slots and mailbox rings (neither is
        kept: gradients in flight are dropped on resume) and their own counters and data
        positions (read as a lock-free checkpoint reads them). Across nodes, for the replica
        methods and for a device arena (read only while every process is quiesced), every
        process pauses."""
        alone = (self.plan.protocol == "server" and self.plan.nnodes == 1
                 and self.arena.device.type == "cpu")
        return self.plan.workers if alone else None

    def _staging(self) -> dict[str, torch.Tensor]:
        """The private copy's buffers (:func:`checkpoint.staging`), kept from one checkpoint to the
        next until the engine closes: faulting a fresh 2 GB in took 1.5 CPU-seconds of the
        workers' cores at every checkpoint, as much as writing it."""
        if self._staged is None:
            self._staged = checkpoint.staging(self.arena, self._ckpt_skip)
        return self._staged

    def _staging_fits(self) -> bool:
        """Whether a private copy of the checkpoint fits in half the memory available now."""
        return 2 * size_of(self.layout, self._ckpt_skip) <= psutil.virtual_memory().available

    def write_checkpoint(self, pause: bool = True, path: str | None = None, final: bool = False,
                         background: bool = False) -> str | None:
        """Write the whole shared state (to ``path``, else the run's checkpoint files: rotated, with
        a sidecar; a failed write is a warning and training goes on).

        ``pause`` says the processes are running. A lock-free run is then read live and not
        paused; any other pauses at a consistent point (between updates) only while its state is
        copied to private memory (kept for the next checkpoint), or for the whole write when that
        copy would not fit in half the memory available. ``background`` writes the file on the
        writer's thread and returns at once (the path it will write); otherwise the path written,
        or None when the run's checkpoint could not be written. Each checkpoint's pause and write
        times go to the record's ``checkpoint_log``."""
        self._writer.join()                      # one write at a time
        glob = self.buffers.glob
        host = self.arena.device.type == "cpu"
        mode = "final" if not pause else "live" if self._lock_free() else "staged"
        if mode == "staged" and host and self._staged is None and not self._staging_fits():
            mode = "paused"                      # written from shared memory while every process waits
        staged = self._staging() if mode == "staged" else None
        pausing = mode in ("staged", "paused")
        applier = self._applier_alone() if pausing else None
        t0 = time.monotonic()                    # the pause starts: the copy's pages are ready
        try:
            if pausing:
                glob["pause"] = PAUSE_ALL if applier is None else PAUSE_APPLIER
                self.group.wait_paused(self.plan.supervisor.heartbeat_timeout,
                                       ranks=None if applier is None else [applier])
            meta = dict(self._ckpt_identity(), config=self.plan.options, seed=self.plan.worker.seed,
                        updates=self.updates(), nodes=self.plan.nnodes, node=self.plan.node_rank,
                        problem={"source": self.source, "options": self.problem_options})
            buffers = (checkpoint.live(self.arena, self._ckpt_skip, self.plan.workers) if mode == "live"
                       else checkpoint.views(self.arena, self._ckpt_skip) if host and mode != "staged"
                       else checkpoint.copies(self.arena, self._ckpt_skip, into=staged))
            if mode == "live":                  # the update count of the control block it holds
                meta["updates"] = checkpoint.updates_of(buffers, self.plan.workers)
            elif applier is not None:           # the learners go on: their positions read whole
                buffers = checkpoint.positions(buffers, self.arena, self._ckpt_skip, self.plan.workers)
        except BaseException:
            glob["pause"] = 0
            raise
        if mode != "paused":
            glob["pause"] = 0
        paused_s = time.monotonic() - t0 if mode == "staged" else 0.0
        target = path or (self._ckpt_files.path if self._ckpt_files else self.plan.supervisor.checkpoint)
        entry = {"updates": meta["updates"], "mode": mode, "pause_s": paused_s}

        def job() -> str | None:
            t = time.monotonic()
            try:
                ok = self._write_doc(path, buffers, meta, final)
            finally:
                if mode == "paused":
                    glob["pause"] = 0
                    entry["pause_s"] = time.monotonic() - t0
            entry.update(write_s=time.monotonic() - t, ok=ok is not None)
            self.record.checkpoint_log.append(entry)
            if ok is not None:
                self.record.checkpoints += 1
            return ok

        if background and mode != "paused":
            self._writer.start(job)
            return target
        return job()

    def wait_checkpoint(self) -> None:
        """Wait for a checkpoint being written in the background; raise what its write raised."""
        self._writer.join()

    def _write_doc(self, path: str | None, buffers: dict, meta: dict, final: bool) -> str | None:
        layout = self.arena.layout
        if path is not None or self._ckpt_files is None:
            path = path or self.plan.supervisor.checkpoint
            checkpoint.save(path, buffers, layout, meta)
            return path
        last = self.record.history[-1].loss if self.record.history else None
        ok = self._ckpt_files.write(lambda target: checkpoint.save(target, buffers, layout, meta),
                                    {**meta, "loss": last}, final=final)
        self.record.checkpoint_failures = self._ckpt_files.failures
        return self._ckpt_files.path if ok else None

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
