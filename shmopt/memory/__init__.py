"""The memory layer: storage backends (POSIX shared memory; a CUDA one registers the same way),
arena layouts with placements, and the arena that makes typed views of them. Nothing above this
layer touches bytes."""
from .arena import Arena, ArenaHandle, ArenaView
from .layout import DEVICE, HOST, Entry, Layout
from .shm import ShmStorage, check_shm_space, list_segments, owner_pid, sweep_stale_segments
from .storage import Storage, StorageHandle, attach_storage, create_storage, register_backend

__all__ = ["Arena", "ArenaHandle", "ArenaView", "Layout", "Entry", "HOST", "DEVICE", "Storage",
           "StorageHandle", "ShmStorage", "create_storage", "attach_storage", "register_backend",
           "check_shm_space", "list_segments", "owner_pid", "sweep_stale_segments"]
