"""``python -m study.data``: synth → check round trip, JSON summary, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.trainables.native_files import default_rows, write_bcdr


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "study.data", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_synth_then_check_json(tmp_path):
    out = tmp_path / "synthetic"
    done = run("synth", out, "--patients", 12, "--seed", 3)
    assert done.returncode == 0, done.stderr
    assert (out / "BCDR-F03" / "bcdr_f03_outlines.csv").is_file()
    checked = run("check", out, "--format", "bcdr", "--roi-size", 64, "--json",
                  "--cache-dir", tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert {"images", "lesions", "patients", "benign", "malignant", "fingerprint",
            "problems"} <= report.keys()
    assert report["patients"] == 12 and report["problems"] == []
    assert report["benign"] > 0 and report["malignant"] > 0
    assert report["benign"] + report["malignant"] == report["views"] == 2 * report["lesions"]
    assert len(report["fingerprint"]) == 32
    assert report["roi_counts"]["rois"] == report["views"]
    # the fingerprint is stable across runs (cache hit) and changes with the ROI settings
    again = json.loads(run("check", out, "--format", "bcdr", "--roi-size", 64, "--json",
                           "--cache-dir", tmp_path / "cache").stdout)
    other = json.loads(run("check", out, "--format", "bcdr", "--roi-size", 48, "--json",
                           "--no-cache").stdout)
    assert again["fingerprint"] == report["fingerprint"] != other["fingerprint"]


def test_check_lists_every_problem_and_fails(tmp_path):
    def corrupt(lines):
        lines[2] = lines[2].replace(",Benign", ",Benignish")
        lines[5] = lines[5].replace(",2,", ",9,", 1)
        return lines

    folder = write_bcdr(tmp_path, default_rows(6), csv_edit=corrupt)
    done = run("check", folder, "--format", "bcdr", "--no-cache")
    assert done.returncode == 1
    assert "problems     2" in done.stdout
    assert "bcdr_f03_outlines.csv, row 3, field 'classification'" in done.stdout
    assert "row 6, field 'image_view'" in done.stdout
    as_json = json.loads(run("check", folder, "--format", "bcdr", "--no-cache", "--json").stdout)
    assert len(as_json["problems"]) == 2 and as_json["fingerprint"] is None


def test_check_of_a_missing_folder_is_a_clear_error(tmp_path):
    done = run("check", tmp_path / "nowhere", "--format", "mias")
    assert done.returncode == 2
    assert "nowhere: no such file or folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_arguments_are_refused(tmp_path):
    done = run("check", tmp_path, "--format", "bcdr", "--roi-size", 2)
    assert done.returncode == 2 and "ROI size must be an integer ≥ 8" in done.stderr
    assert run("synth", tmp_path / "x", "--patients", 0).returncode == 2


def test_synth_then_check_the_dicom_formats(tmp_path):
    """Both DICOM layouts: synthesised, checked, same JSON keys, the label rule printed."""
    for fmt, extra in (("cbis-ddsm", []), ("inbreast", ["--birads-malignant-from", "4b"])):
        out = tmp_path / fmt
        done = run("synth", out, "--format", fmt, "--patients", 6, "--seed", 1)
        assert done.returncode == 0, done.stderr
        assert list(out.rglob("*.dcm"))
        checked = run("check", out, "--format", fmt, "--roi-size", 32, "--json", "--no-cache",
                      *extra)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        report = json.loads(checked.stdout)
        assert {"images", "lesions", "patients", "benign", "malignant", "fingerprint",
                "problems", "label_rule"} <= report.keys()
        assert report["patients"] == 6 and report["problems"] == []
        assert report["benign"] > 0 and report["malignant"] > 0
        assert report["roi_counts"]["rois"] == report["views"]
        text = run("check", out, "--format", fmt, "--roi-size", 32, "--no-cache", *extra).stdout
        rule = ("BENIGN, BENIGN_WITHOUT_CALLBACK → benign" if fmt == "cbis-ddsm"
                else "BI-RADS 1–4a → benign, 4b–6 → malignant")
        assert "labels       " in text and rule in text


def test_check_names_problems_in_a_dicom_dataset(tmp_path):
    out = tmp_path / "inb"
    assert run("synth", out, "--format", "inbreast", "--patients", 4).returncode == 0
    lines = (out / "INbreast.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(";", 1)[0] + ";9"
    (out / "INbreast.csv").write_text("\n".join(lines) + "\n")
    done = run("check", out, "--format", "inbreast", "--no-cache", "--json")
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert problems == [f"{out / 'INbreast.csv'}, row 3, field 'Bi-Rads': expected one of "
                        "['0', '1', '2', '3', '4a', '4b', '4c', '5', '6'], got '9'"]
    assert run("check", out, "--format", "inbreast",
               "--birads-malignant-from", "9").returncode == 2
