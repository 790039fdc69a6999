"""``python -m shmopt`` (and ``torchrun ... -m shmopt run ...``): the command line."""
from .cli import main

if __name__ == "__main__":
    main()
