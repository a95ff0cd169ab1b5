"""voxflow's command line (typer + rich): every printed line lives in this package."""

from voxflow.cli.app import app, main

__all__ = ["app", "main"]
