"""``python -m ant``: the same command line as ``ant`` (torchrun launches modules)."""

from ant.cli import main

if __name__ == "__main__":
    main()
