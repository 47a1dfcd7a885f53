"""Show which blocks of a model train, and at what learning rate.

    python -m trainables.inspect --backbone inception_v3 --variant FTED [--lam 3 --base-lr 1e-3
        --depth normalized|index --granularity layer|block --input-size 299] [--json]

Prints one row per block (input to output, head last): parameters, trainable parameters and
the min/max learning rate over the block's layers. ``--json`` prints a list of objects with
keys ``block``, ``params``, ``trainable``, ``lr_min``, ``lr_max`` (rates ``null`` for frozen
blocks) — the same rows as :func:`trainables.regimes.lr_table`, which every trial logs.
The table does not depend on weight values, so models are built without pretrained weights
and no weight file is needed. ``--smoke-test`` builds every paper variant at a small input.

Examples::

    python -m trainables.inspect --backbone inception_v3 --variant FTED --lam 3 --base-lr 1e-3
    python -m trainables.inspect --backbone efficientnet_lite0 --variant 2FT --json
    python -m trainables.inspect --smoke-test

Exit status: 0 table printed, 2 bad arguments (unknown variant, input too small).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use: ``--help`` answers in well under 2 s
    from .regimes import RegimeConfig

#: ``--help``'s choices without importing torch (a test checks them against the registries).
BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "inception_v3")
PAPER_VARIANTS: tuple[str, ...] = ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")
DEPTHS: tuple[str, ...] = ("normalized", "index")
GRANULARITIES: tuple[str, ...] = ("layer", "block")
DEFAULT_LAM = 3.0


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`~trainables.regimes.lr_table` as an aligned text table."""

    def rate(x: float | None) -> str:
        return "frozen" if x is None else f"{x:.3g}"

    header = ("block", "params", "trainable", "lr_min", "lr_max")
    body = [
        (r["block"], f"{r['params']:,}", f"{r['trainable']:,}", rate(r["lr_min"]),
         rate(r["lr_max"]))
        for r in rows
    ]
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    footer = ("total", f"{total:,}", f"{trainable:,}", "", "")
    table = [header, *body, footer]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    return "\n".join(line(row) for row in table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainables.inspect", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    p.add_argument("--variant", default="FTED", help=f"one of {', '.join(PAPER_VARIANTS)} or kFT")
    p.add_argument("--lam", type=float, default=DEFAULT_LAM, help="FTED decay (paper: 3)")
    p.add_argument("--base-lr", type=float, default=None, help="default: 1e-4, FTED 1e-3")
    p.add_argument("--depth", choices=DEPTHS, default="normalized")
    p.add_argument("--granularity", choices=GRANULARITIES, default="layer")
    p.add_argument("--input-size", type=int, default=None, help="px; default: the backbone's")
    p.add_argument("--head-pool", choices=("flatten", "avg"), default="flatten")
    p.add_argument("--head-hidden", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--smoke-test", action="store_true", help="build every paper variant, small")
    return p.parse_args(argv)


def regime_from_args(args: argparse.Namespace, variant: str) -> RegimeConfig:
    from .regimes import RegimeConfig

    extra = {} if args.head_hidden is None else {"head_hidden": args.head_hidden}
    return RegimeConfig(
        variant=variant, base_lr=args.base_lr, lam=args.lam, depth=args.depth,
        granularity=args.granularity, head_pool=args.head_pool, **extra,
    )


def table_for(backbone: str, regime: RegimeConfig, input_size: int | None) -> list[dict]:
    """Build the model (no pretrained weights: rates do not depend on them) and tabulate it."""
    from .backbones import default_input_size
    from .regimes import build_model, lr_table

    size = input_size if input_size is not None else default_input_size(backbone)
    model = build_model(backbone, regime, input_size=size, pretrained=False)
    return lr_table(model)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.smoke_test:
            for variant in PAPER_VARIANTS:
                rows = table_for(args.backbone, regime_from_args(args, variant), 96)
                trainable = sum(r["trainable"] for r in rows)
                print(f"{args.backbone} {variant}: {len(rows)} blocks, {trainable:,} trainable")
            return 0
        rows = table_for(args.backbone, regime_from_args(args, args.variant), args.input_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
