"""The ``posecli`` command: thin typer adapters over the library, one module per subcommand.

This package is the only place that prints; library code returns values and
takes a ``progress`` callable when it runs long.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from posecli.cli import benchmark, convert, convert_weights, eval, export, predict, train

app = typer.Typer(
    name="posecli",
    help="Top-down human pose estimation with HRNet heatmap models: MMPose's numbers, without MMPose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"posecli {version('posecli')}")
        except PackageNotFoundError:  # a checkout on sys.path, not installed
            typer.echo("posecli (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Top-down human pose estimation with HRNet heatmap models: MMPose's numbers, without MMPose.

    Start with: posecli train --preset coco-aic-merge --sample --out runs/sample
    """


convert.app.command("weights")(convert_weights.weights)
app.add_typer(convert.app, name="convert")
app.command("train")(train.train)
app.command("eval")(eval.evaluate)
app.command("benchmark")(benchmark.benchmark)
app.command("predict")(predict.predict)
app.command("export")(export.export)


def main() -> None:
    app(prog_name="posecli")
