"""``python -m teachloop ...`` (and ``accelerate launch -m teachloop train ...``): the CLI."""

from teachloop.cli import main

if __name__ == "__main__":
    main()
