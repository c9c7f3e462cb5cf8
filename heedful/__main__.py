"""`python -m heedful ...`: the same CLI as the `heedful` script."""

from heedful.cli import main

main()
