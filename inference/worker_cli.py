"""Subcommands of this package (filled in by its issue)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to `lookout`."""


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's actions to `lookout models`."""
