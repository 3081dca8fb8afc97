"""The ``posecli`` command: thin typer adapters over the library, one module per subcommand.

This package is the only place that prints; library code returns values and
takes a ``progress`` callable when it runs long.
"""

from __future__ import annotations

import typer

from posecli.cli import benchmark, convert, convert_weights, eval, export, predict, train

app = typer.Typer(
    name="posecli",
    help="Top-down human pose estimation with HRNet heatmap models: MMPose's numbers, without MMPose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
convert.app.command("weights")(convert_weights.weights)
app.add_typer(convert.app, name="convert")
app.command("train")(train.train)
app.command("eval")(eval.evaluate)
app.command("benchmark")(benchmark.benchmark)
app.command("predict")(predict.predict)
app.command("export")(export.export)


def main() -> None:
    app(prog_name="posecli")
