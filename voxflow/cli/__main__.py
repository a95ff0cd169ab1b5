"""``python -m voxflow.cli``: the same as the ``voxflow`` script."""

from voxflow.cli.app import main

main()
