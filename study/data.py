"""``python -m study.data``: write a synthetic dataset, or check and summarise a real one.

Examples::

    python -m study.data synth runs/data/synthetic --patients 150 --seed 0
    python -m study.data synth runs/data/cbis --format cbis-ddsm --patients 40
    python -m study.data check runs/data/synthetic --format bcdr
    python -m study.data check /data/INbreast --format inbreast --birads-malignant-from 4b
    python -m study.data check /data/BCDR-F03_dataset --format bcdr --roi-size 299 --json

Exit status: 0 written / the dataset is usable, 1 the dataset has problems (each listed),
2 bad arguments or a dataset that cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from trainables.datasets import (
    FORMATS,
    CbisOptions,
    InbreastOptions,
    LoadOptions,
    load_dataset,
)
from trainables.records import DatasetError
from trainables.rois import RoiConfig, extract_rois


def default_cache_dir() -> Path:
    """ROI cache: ``$TLSTUDY_CACHE`` or ``~/.cache/tlstudy``."""
    return Path(os.environ.get("TLSTUDY_CACHE", Path.home() / ".cache" / "tlstudy")) / "rois"


SYNTH_FORMATS = ("bcdr", "cbis-ddsm", "inbreast")


def check(path: Path, fmt: str, roi: RoiConfig, cache_dir: Path | None,
          options: LoadOptions | None = None) -> dict[str, object]:
    """Validate a dataset and summarise it; ``problems`` lists every problem found."""
    dataset = load_dataset(path, fmt, strict=False, options=options or LoadOptions())
    report: dict[str, object] = {"path": str(path), "annotation_file": str(dataset.annotation_file),
                                 **dataset.summary(), "roi": asdict(roi), "roi_counts": None,
                                 "fingerprint": None,
                                 "problems": [str(p) for p in dataset.problems]}
    if dataset.problems:
        return report
    try:
        rois, summary = extract_rois(dataset, roi, cache_dir=cache_dir)
    except DatasetError as exc:
        problems = getattr(exc, "problems", None)
        report["problems"] = [str(p) for p in problems] if problems else [str(exc)]
        return report
    report["roi_counts"] = asdict(summary)
    report["fingerprint"] = rois.fingerprint
    return report


def format_report(r: dict) -> str:
    lines = [
        f"dataset      {r['path']}  ({r['format']}: {Path(r['annotation_file']).name})",
        f"images       {r['images']}",
        f"lesions      {r['lesions']}  ({r['views']} lesion views)",
        f"patients     {r['patients']}",
        f"benign       {r['benign']}   malignant {r['malignant']}",
    ]
    if r.get("label_rule"):
        lines.append(f"labels       {r['label_rule']}")
    for reason, n in sorted(r["skipped"].items()):
        lines.append(f"skipped      {n} × {reason}")
    counts = r["roi_counts"]
    if counts:
        lines.append(f"ROIs         {counts['rois']} at {r['roi']['size']} px: "
                     f"{counts['fitted']} fitted, {counts['resized']} resized (lesion larger "
                     f"than the crop), {counts['lesion_cut']} cut, {counts['padded']} padded")
    lines.append(f"fingerprint  {r['fingerprint'] or '-'}")
    problems = r["problems"]
    lines.append(f"problems     {len(problems) or 'none'}")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write a synthetic dataset in a native layout "
                       "(BCDR-F03 TIFFs, or CBIS-DDSM / INbreast DICOMs)")
    s.add_argument("out", type=Path, help="folder to write (plays BCDR-F03_dataset/, the "
                   "CBIS-DDSM download folder or INbreast Release 1.0/)")
    s.add_argument("--format", choices=SYNTH_FORMATS, default="bcdr",
                   help="layout to write (default bcdr)")
    s.add_argument("--patients", type=int, default=150, help="number of patients (default 150)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c = sub.add_parser("check", help="validate a dataset and print a summary")
    c.add_argument("path", type=Path, help="dataset folder (or its annotation file)")
    c.add_argument("--format", required=True, choices=FORMATS, help="dataset layout")
    c.add_argument("--roi-size", type=int, default=299, help="ROI side in px (default 299)")
    c.add_argument("--large", choices=["resize", "crop"], default="resize",
                   help="lesions larger than the ROI: resize their bounding square, or crop")
    c.add_argument("--pad", choices=["zero", "edge", "reflect", "shift"], default="zero",
                   help="window parts outside the image: pad, or shift the window inside")
    c.add_argument("--cache-dir", type=Path, default=None,
                   help="ROI cache folder (default $TLSTUDY_CACHE/rois or ~/.cache/tlstudy/rois)")
    c.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    c.add_argument("--calcifications", action="store_true",
                   help="cbis-ddsm: also load the calcification CSVs (default: masses only)")
    c.add_argument("--birads-malignant-from", default="4a",
                   help="inbreast: lowest BI-RADS called malignant (default 4a: 1–3 benign)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.command == "synth":
        from trainables.datasets.synthetic import SynthConfig

        try:
            config = SynthConfig(patients=args.patients, seed=args.seed)
        except ValueError as exc:
            parser.error(str(exc))
        folder = _synth(args.format, args.out, config)
        print(f"wrote a synthetic {args.format} dataset ({args.patients} patients, "
              f"seed {args.seed}) to {folder}")
        return 0

    try:
        roi = RoiConfig(size=args.roi_size, large=args.large, pad=args.pad)
        options = LoadOptions(CbisOptions(calcifications=args.calcifications),
                              InbreastOptions(birads_malignant_from=args.birads_malignant_from))
    except ValueError as exc:
        parser.error(str(exc))
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    try:
        report = check(args.path, args.format, roi, cache, options)
    except DatasetError as exc:
        report = {"path": str(args.path), "format": args.format, "problems": [str(exc)],
                  "images": 0, "lesions": 0, "patients": 0, "benign": 0, "malignant": 0,
                  "fingerprint": None}
        if not args.json:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0


def _synth(fmt: str, out: Path, config) -> Path:  # type: ignore[no-untyped-def]
    from trainables.datasets import synthetic_native
    from trainables.datasets.synthetic import write_synthetic_bcdr

    writer = {"bcdr": write_synthetic_bcdr,
              "cbis-ddsm": synthetic_native.write_synthetic_cbis,
              "inbreast": synthetic_native.write_synthetic_inbreast}[fmt]
    return writer(out, config)


if __name__ == "__main__":
    sys.exit(main())
