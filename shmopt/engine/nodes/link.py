"""The node link: this node's one member of the torch.distributed (gloo) process group, and the
one transport between nodes: the link loop, the relay and the global applier all talk through it.

One process per node (rank P: engine.roles) joins the group; workers never do and never wait on
the network. Every collective is started with ``async_op=True`` and polled (``is_completed``), so
while it is in flight the process still answers the stop flag, writes its heartbeat into the
rendezvous store and notices a dead supervisor. Point-to-point receives are blocking (gloo's
cannot be polled: ``irecv().is_completed()`` stays False until ``wait()``, and a ``wait`` that
times out closes the pair), so they run in threads of their own (global_io, relay).

Rendezvous: under torchrun, ``env://`` (torchrun's store). Without torchrun node 0 listens on
``--master HOST:PORT`` only: it binds that address itself and hands the socket to the
``TCPStore`` (``master_listen_fd``), because a TCPStore left to itself listens on every
interface. gloo's own sockets go to the interface that reaches the master (``lo`` for a
loopback master) unless ``GLOO_SOCKET_IFNAME`` says otherwise.

A lost node (dead: gloo reports "connection closed" within milliseconds; stalled: the collective
times out after ``--dist-timeout``) is named from the heartbeats: every link adds 1 to its key
``shmopt/hb/<node>`` twice a second; the nodes whose counter does not move over
:data:`NAMING_S` are the lost ones. The store's host unreachable means node 0 is lost.
"""
from __future__ import annotations

import datetime
import os
import re
import socket
import threading
import time
from typing import Callable

import torch
import torch.distributed as dist

from ...errors import NodeError
from ...node_plan import NodePlan, is_loopback
from ..context import Context

POLL_S = 0.0005                 # a collective in flight is polled every 0.5 ms
BEAT_S = 0.5
NAMING_S = 1.5


def first_line(exc: BaseException) -> str:
    """The gist of a gloo/store error: its first sentence, without the source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


def _interface_for(host: str, port: int) -> str | None:
    """The network interface whose address this machine uses to reach ``host``."""
    if is_loopback(host):
        return "lo"
    try:
        import psutil
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            local = s.getsockname()[0]
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address == local for a in addrs):
                return name
    except (OSError, ImportError):
        pass
    return None


class NodeLink:
    """Collectives between nodes, polled; counts bytes and time in communication."""

    def __init__(self, plan: NodePlan, abort_check: Callable[[], None]) -> None:
        self.plan = plan
        self._owner = threading.current_thread()
        self.rank, self.nnodes = plan.rank, plan.nnodes
        self._abort_check = abort_check
        self._listener: socket.socket | None = None
        self.rendezvous = None
        self.comm_s = 0.0
        self.bytes = 0
        self.collectives = 0
        self._next_beat = 0.0
        self._next_watch = 0.0
        self._last_watch: float | None = None
        self._moved: dict[int, tuple[int, float]] = {}   # peer -> (heartbeat count, when it moved)

    # ------------------------------------------------------------ connect
    def connect(self) -> "NodeLink":
        p, td = self.plan, datetime.timedelta(seconds=self.plan.timeout)
        host, port = p.master or (os.environ.get("MASTER_ADDR", "127.0.0.1"),
                                  int(os.environ.get("MASTER_PORT", "29500")))
        if "GLOO_SOCKET_IFNAME" not in os.environ and (ifname := _interface_for(host, port)):
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
        where = f"{host}:{port}"
        try:
            if p.master is None:
                dist.init_process_group("gloo", init_method="env://", rank=self.rank,
                                        world_size=self.nnodes, timeout=td)
                self.rendezvous = dist.distributed_c10d._get_default_store()
            else:
                self.rendezvous = self._tcp_store(host, port, td)
                dist.init_process_group("gloo", store=self.rendezvous, rank=self.rank,
                                        world_size=self.nnodes, timeout=td)
        except NodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - DistStoreError, RuntimeError, TimeoutError
            who = "the other nodes" if self.rank == 0 else "node 0"
            raise NodeError(f"node {self.rank} could not meet {who} at {where} within "
                            f"{p.timeout:g} s (--dist-timeout): {first_line(exc)}",
                            tuple(r for r in range(self.nnodes) if r != self.rank)) from None
        try:
            self.rendezvous.set_timeout(datetime.timedelta(seconds=min(5.0, p.timeout)))
        except (AttributeError, RuntimeError):
            pass
        self.beat(force=True)
        return self

    def _tcp_store(self, host: str, port: int, td: datetime.timedelta):
        if self.rank != 0:
            return dist.TCPStore(host, port, self.nnodes, is_master=False, timeout=td)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            raise NodeError(f"node 0 cannot listen on {host}:{port} (--master): {exc.strerror or exc}; "
                            f"give an address of this machine and a free port") from None
        self._listener = sock
        return dist.TCPStore(host, port, self.nnodes, is_master=True, timeout=td,
                             wait_for_workers=False, master_listen_fd=sock.fileno())

    # ------------------------------------------------------------ liveness
    def _hb(self, rank: int) -> str:
        return f"shmopt/hb/{rank}"

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        self._next_beat = now + BEAT_S
        try:
            self.rendezvous.add(self._hb(self.rank), 1)
        except Exception as exc:  # noqa: BLE001
            raise self._lost_store(exc, "a heartbeat") from None

    def _lost_store(self, exc: BaseException, what: str) -> NodeError:
        host = (0,) if self.rank != 0 else ()
        return NodeError(f"lost node 0 (its rendezvous store stopped answering) during {what}: "
                         f"{first_line(exc)}", host)

    def lost(self, exc: BaseException, what: str) -> NodeError:
        """Name the nodes that stopped beating; called after a collective failed."""
        peers = [r for r in range(self.nnodes) if r != self.rank]
        try:
            before = [self.rendezvous.add(self._hb(r), 0) for r in peers]
            end = time.monotonic() + NAMING_S
            while time.monotonic() < end:
                time.sleep(0.1)
                self.beat()
            after = [self.rendezvous.add(self._hb(r), 0) for r in peers]
            gone = tuple(r for r, a, b in zip(peers, before, after) if a == b)
            detail = f"no heartbeat for {NAMING_S:g} s"
        except Exception:  # noqa: BLE001 - the store's host is gone with it
            gone, detail = ((0,) if self.rank != 0 else tuple(peers)), "its store stopped answering"
        names = ", ".join(map(str, gone or peers))
        return NodeError(f"lost node {names} ({detail if gone else 'cause unknown'}) during {what}: "
                         f"{first_line(exc)}", gone or tuple(peers))

    def silent(self, peers: list[int], after_s: float) -> list[int]:
        """The peers whose heartbeat has not moved for ``after_s`` seconds of this process's own
        watching (read at most every BEAT_S; a gap in the watching itself, such as a checkpoint
        pause, restarts the clocks, so a peer held up by this process is never blamed)."""
        now = time.monotonic()
        if now < self._next_watch:
            return []
        if self._last_watch is not None and now - self._last_watch > 4 * BEAT_S:
            self._moved = {}
        self._next_watch, self._last_watch = now + BEAT_S, now
        moved, out = self._moved, []
        for r in peers:
            try:
                count = self.rendezvous.add(self._hb(r), 0)
            except Exception as exc:  # noqa: BLE001
                raise self._lost_store(exc, "the heartbeat watch") from None
            last = moved.get(r)
            if last is None or last[0] != count:
                moved[r] = (count, now)
            elif now - last[1] > after_s:
                out.append(r)
        return out

    # ------------------------------------------------------------ point to point
    def send(self, t: torch.Tensor, dst: int) -> float:
        """Blocking send (gloo's returns once the peer has received it); raises what gloo raises;
        returns its seconds. The link's totals (``comm_s``, ``bytes``) count the sends of the
        calling thread only when it is the link's own (the global applier's sender threads keep
        per-node tallies of their own)."""
        t0 = time.perf_counter()
        dist.send(t, dst)
        seconds = time.perf_counter() - t0
        if threading.current_thread() is self._owner:
            self.comm_s += seconds
            self.bytes += t.numel() * t.element_size()
        return seconds

    @staticmethod
    def recv(t: torch.Tensor, src: int | None = None) -> int:
        """Blocking receive into ``t``, from ``src`` or (None) any node; returns the sender."""
        return dist.recv(t, src)

    # ------------------------------------------------------------ collectives
    def _finish(self, work, what: str, nbytes: int) -> None:
        t0 = time.perf_counter()
        while not work.is_completed():
            self._abort_check()
            self.beat()
            time.sleep(POLL_S)
        try:
            work.wait()
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError / DistError
            raise self.lost(exc, what) from None
        self.comm_s += time.perf_counter() - t0
        self.bytes += nbytes
        self.collectives += 1

    def _start(self, call, what: str):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001
            raise self.lost(exc, what) from None

    def all_reduce_(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Sum ``t`` over the nodes, in place."""
        work = self._start(lambda: dist.all_reduce(t, async_op=True), what)
        self._finish(work, what, t.numel() * t.element_size())
        return t

    def broadcast_(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        """Node ``src``'s ``t`` into every node's ``t``, in place."""
        work = self._start(lambda: dist.broadcast(t, src=src, async_op=True), what)
        self._finish(work, what, t.numel() * t.element_size() if self.rank == src else 0)
        return t

    def all_gather(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Every node's ``t``, stacked in node order."""
        out = [torch.empty_like(t) for _ in range(self.nnodes)]
        work = self._start(lambda: dist.all_gather(out, t, async_op=True), what)
        self._finish(work, what, t.numel() * t.element_size())
        return torch.stack(out)

    def agree(self, signature: list[float], names: list[str]) -> None:
        """Refuse to train with nodes that run another configuration (same workers, model, ...)."""
        rows = self.all_gather(torch.tensor(signature, dtype=torch.float64), "the start")
        for node, row in enumerate(rows.tolist()):
            for name, mine, theirs in zip(names, signature, row):
                if mine != theirs:
                    raise NodeError(f"node {node} runs {name}={theirs:g}, node {self.rank} runs "
                                    f"{mine:g}: every node needs the same options", (node,))

    def close(self, clean: bool) -> None:
        """Leave the group (after the final exchange); on an error path just let go."""
        if clean and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001
                pass
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def node_signature(ctx: Context) -> tuple[list[float], list[str]]:
    """What every node must share to exchange: workers, parameters, the nodes' steps, K, and the
    rows a gradient of each table carries (from each node's first mini-batch)."""
    p = ctx.plan
    n = ctx.buffers.x.shape[-1]
    # a table's rows per gradient size the global applier's messages: one value on every node
    return ([float(p.workers), float(n), float(p.nodes.total_steps or 0), float(p.k),
             *(float(t.slot_rows) for t in p.tables)],
            ["workers", "parameters", "steps", "k",
             *(f"rows per gradient of table {t.name!r}" for t in p.tables)])


def connect(ctx: Context) -> NodeLink:
    link = NodeLink(ctx.plan.nodes, ctx.check_abort).connect()
    link.agree(*node_signature(ctx))
    return link
