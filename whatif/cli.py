"""``glimpse wit`` (a What-If Tool notebook for a served model) and ``glimpse report`` (the slicing report).

``configure_*`` only add flags; the work (and witwidget, nbformat, matplotlib) is imported inside ``run_*``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_wit", "run_wit", "configure_report", "run_report", "format_table"]

_DEFAULT_ADDRESS = "localhost:8500"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serving-address", default=_DEFAULT_ADDRESS,
                        help=f"gRPC address of TF Serving or `glimpse serve` (default {_DEFAULT_ADDRESS}).")
    parser.add_argument("--model", required=True, help="Served model name.")
    parser.add_argument("--model-version", type=_positive_int, default=None,
                        help="Version of the model (default: the latest the server has).")
    parser.add_argument("--signature", default=None,
                        help="Signature WIT/the report calls (default: the contract's `classification`).")
    parser.add_argument("--examples", required=True, type=Path,
                        help="TFRecord of tf.Examples (the exporter's <model_base_path>/examples/test.tfrecord).")
    compare = parser.add_argument_group("comparison (any of these adds a second model)")
    compare.add_argument("--compare-model", default=None, help="Name of a second model (default: --model).")
    compare.add_argument("--compare-version", type=_positive_int, default=None,
                         help="Version of the second model (default: its latest).")
    compare.add_argument("--compare-address", default=None, help="gRPC address of the second model's server.")


def format_table(rows: list[tuple[str, str]], headers: tuple[str, str] = ("setting", "value")) -> str:
    """Rows as a plain-text table with a header rule (what the commands print)."""
    width = max(len(headers[0]), *(len(field) for field, _ in rows))
    lines = [f"{headers[0]:<{width}}  {headers[1]}", f"{'-' * width}  {'-' * max(len(headers[1]), 5)}"]
    lines += [f"{field:<{width}}  {value}" for field, value in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# glimpse wit


def configure_wit(parser: argparse.ArgumentParser) -> None:
    _add_model_flags(parser)
    parser.add_argument("--max-examples", type=_positive_int, default=1000,
                        help="Examples WIT loads (default 1000).")
    parser.add_argument("--use-predict", action="store_true",
                        help="Call Predict instead of Classify (the classification signature serves both).")
    parser.add_argument("--out", type=Path, default=None,
                        help="Notebook to write (default out/wit/<model>.ipynb).")
    parser.add_argument("--height", type=_positive_int, default=800, help="Widget height in pixels (default 800).")
    parser.add_argument("--no-check", action="store_true",
                        help="Do not ask the server now (the notebook asks when it runs); the label vocab then "
                             "comes from the model directory next to the examples.")


def _wit_arguments(args: argparse.Namespace) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "serving_address": args.serving_address,
        "model_name": args.model,
        "examples_path": str(args.examples.resolve()),
    }
    optional = {
        "model_version": args.model_version,
        "signature": args.signature,
        "compare_model_name": args.compare_model,
        "compare_model_version": args.compare_version,
        "compare_address": args.compare_address,
    }
    arguments.update({k: v for k, v in optional.items() if v is not None})
    arguments["max_examples"] = args.max_examples
    if args.use_predict:
        arguments["use_predict"] = True
    return arguments


def run_wit(args: argparse.Namespace) -> int:
    """Check the served model(s), write the notebook, print TensorBoard's WIT settings."""
    from whatif.config import WitConfigError, resolve_settings, tensorboard_settings
    from whatif.notebook import write_notebook

    arguments = _wit_arguments(args)
    out = args.out if args.out is not None else Path("out") / "wit" / f"{args.model}.ipynb"
    try:
        settings = resolve_settings(**arguments, check_server=not args.no_check)
        path = write_notebook(out, arguments, settings=settings, height=args.height)
    except (WitConfigError, ValueError, TypeError, OSError) as e:
        print(f"glimpse wit: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    print(f"  open it in Jupyter (with witwidget's `wit-widget` notebook extension) and run all cells; "
          f"label vocab: {', '.join(settings.label_vocab)}")
    print()
    print("TensorBoard What-If Tool settings:")
    print(format_table(tensorboard_settings(settings)))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# glimpse report


def configure_report(parser: argparse.ArgumentParser) -> None:
    _add_model_flags(parser)
    parser.add_argument("--out", type=Path, default=Path("out") / "report",
                        help="Directory for report.json, report.md and the charts (default out/report).")
    parser.add_argument("--max-examples", type=_positive_int, default=10_000,
                        help="Examples to read (default 10000).")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="Examples per Classify call.")
    parser.add_argument("--top-k", type=_positive_int, default=10, help="Rows of the disagreement tables.")
    parser.add_argument("--bins", type=_positive_int, default=4,
                        help="Quantile bins for brightness and size (default 4).")
    parser.add_argument("--timeout", type=_positive_float, default=120.0, help="Seconds per Classify call.")


def run_report(args: argparse.Namespace) -> int:
    """Run the model(s) over the examples and write the report; print the overall numbers."""
    from glimpse_wire.contract import SIG_CLASSIFY
    from whatif.report import ReportConfig, ReportError, make_report

    try:
        config = ReportConfig(
            serving_address=args.serving_address,
            model=args.model,
            examples=args.examples,
            out=args.out,
            model_version=args.model_version,
            signature=args.signature or SIG_CLASSIFY,
            compare_model=args.compare_model,
            compare_version=args.compare_version,
            compare_address=args.compare_address,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            top_k=args.top_k,
            quantile_bins=args.bins,
            timeout_s=args.timeout,
        )
        report = make_report(config)
    except (ReportError, OSError) as e:
        print(f"glimpse report: {e}", file=sys.stderr)
        return 1
    overall = report["overall"]
    rows = [
        (m["title"], f"{100.0 * overall['accuracy'][m['key']]:.1f}% ({overall['correct'][m['key']]}/{overall['n']})")
        for m in report["models"]
    ]
    if "agreement" in overall:
        rows.append(("agreement", f"{100.0 * overall['agreement']:.1f}%"))
    print(format_table(rows, ("model", "accuracy")))
    print()
    files = ["report.json", "report.md", *report["charts"].values()]
    print(f"wrote {config.out}/: {', '.join(files)}")
    return 0
