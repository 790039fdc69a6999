"""The memory layer: storage backends (POSIX shared memory for host arenas, CUDA IPC for cuda
ones; listed in :mod:`.backends`, contract in :mod:`.storage`), arena layouts with placements, and
the arena that makes typed views of them. Nothing above this layer touches bytes."""
from .arena import Arena, ArenaHandle, ArenaView
from .backends import BACKENDS, attach_storage, backend_for, create_storage, fence_for, local_device
from .layout import DEVICE, HOST, Entry, Layout
from .semaphores import sweep_stale_semaphores
from .shm import ShmStorage, check_shm_space, list_segments, owner_pid, sweep_stale_segments
from .storage import Backend, Storage, StorageHandle

__all__ = ["Arena", "ArenaHandle", "ArenaView", "Layout", "Entry", "HOST", "DEVICE", "Storage",
           "StorageHandle", "Backend", "BACKENDS", "ShmStorage", "backend_for", "create_storage",
           "attach_storage", "fence_for", "local_device", "check_shm_space", "list_segments",
           "owner_pid", "sweep_stale_segments", "sweep_stale_semaphores"]
