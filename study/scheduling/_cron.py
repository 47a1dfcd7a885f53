"""Where scheduled re-studies are registered: a crontab entry per study on this machine, or,
for a cluster, a systemd timer (on the head node) and a Kubernetes CronJob, printed.

Crontab entries end with ``# tlstudy-schedule:<study>``, the marker ``list`` and ``remove`` use;
other lines of the crontab are kept as they are. The crontab is read and written with
``crontab -l`` / ``crontab -`` or, given a file (tests, ``--crontab``), that file.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARKER = "# tlstudy-schedule:"
_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MACROS = {"@hourly": "hourly", "@daily": "daily", "@midnight": "daily", "@weekly": "weekly",
           "@monthly": "monthly", "@yearly": "yearly", "@annually": "yearly"}


class CronError(ValueError):
    """A bad cron expression, or the crontab cannot be read or written."""


@dataclass(frozen=True)
class CronEntry:
    study: str
    schedule: str
    command: str

    def line(self) -> str:
        return f"{self.schedule} {self.command} {MARKER}{self.study}"


def check_cron(expr: str) -> str:
    """``expr`` normalised (single spaces), or CronError saying what is wrong."""
    expr = " ".join(expr.split())
    if expr in _MACROS:
        return expr
    fields = expr.split(" ")
    if len(fields) != 5:
        raise CronError(f"cron expression {expr!r}: expected 5 fields (minute hour day-of-month "
                        f"month day-of-week, e.g. '0 3 * * 1') or @daily/@weekly/..., got "
                        f"{len(fields)}")
    limits = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
              ("day of week", 0, 7))
    for value, (name, low, high) in zip(fields, limits, strict=True):
        if not _FIELD.match(value):
            raise CronError(f"cron expression {expr!r}: {name} {value!r} is not a number, "
                            "'*', a range a-b, a step /n or a comma list of those")
        for n in re.findall(r"(?<![/\d])\d+", value):
            if not low <= int(n) <= high:
                raise CronError(f"cron expression {expr!r}: {name} {n} is outside {low}-{high}")
    return expr


def cron_command(argv: list[str], *, workdir: Path, log_file: Path) -> str:
    """A crontab command line: run ``argv`` in ``workdir``, append its output to ``log_file``
    (``%`` escaped: cron turns it into a newline)."""
    text = (f"cd {shlex.quote(str(workdir))} && {shlex.join(argv)} >> "
            f"{shlex.quote(str(log_file))} 2>&1")
    return text.replace("%", r"\%")


# ----------------------------------------------------------------------------- the crontab


def read_crontab(file: Path | None) -> str:
    if file is not None:
        return Path(file).read_text() if Path(file).is_file() else ""
    try:
        done = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CronError("the `crontab` command is not installed (install cron, e.g. "
                        "`apt-get install cron`), or pass --crontab FILE") from None
    if done.returncode != 0:
        if "no crontab" in done.stderr.lower():
            return ""
        raise CronError(f"crontab -l failed: {done.stderr.strip()}")
    return done.stdout


def write_crontab(text: str, file: Path | None) -> None:
    if file is not None:
        tmp = Path(file).with_name(Path(file).name + ".tmp")
        tmp.write_text(text)
        tmp.replace(file)
        return
    try:
        done = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise CronError("the `crontab` command is not installed; pass --crontab FILE") from None
    if done.returncode != 0:
        raise CronError(f"crontab - failed: {done.stderr.strip()}")


def entries(text: str) -> list[CronEntry]:
    """The tlstudy entries of a crontab's text."""
    out = []
    for line in text.splitlines():
        body, sep, study = line.rpartition(MARKER)
        if not sep or line.lstrip().startswith("#") or not study.strip():
            continue
        body = body.strip()
        if body.startswith("@"):
            schedule, _, command = body.partition(" ")
        else:
            parts = body.split(None, 5)
            if len(parts) < 6:
                continue
            schedule, command = " ".join(parts[:5]), parts[5]
        out.append(CronEntry(study.strip(), schedule, command.strip()))
    return out


def with_entry(text: str, entry: CronEntry) -> str:
    """``text`` with ``entry`` added, replacing the study's previous entry."""
    kept = [ln for ln in text.splitlines() if not _is_entry_of(ln, entry.study)]
    return "\n".join([*kept, entry.line()]) + "\n"


def without_entry(text: str, study: str) -> tuple[str, bool]:
    """``text`` less the study's entry, and whether there was one."""
    lines = text.splitlines()
    kept = [ln for ln in lines if not _is_entry_of(ln, study)]
    return ("\n".join(kept) + "\n" if kept else ""), len(kept) != len(lines)


def _is_entry_of(line: str, study: str) -> bool:
    return line.rstrip().endswith(f"{MARKER}{study}") and not line.lstrip().startswith("#")


# ----------------------------------------------------------------------------- cluster units


def on_calendar(expr: str) -> str:
    """systemd ``OnCalendar=`` for a 5-field cron expression (``0 3 * * 1`` ->
    ``Mon *-*-* 03:00:00``)."""
    expr = check_cron(expr)
    if expr in _MACROS:
        return _MACROS[expr]
    minute, hour, dom, month, dow = expr.split(" ")

    def part(f: str, width: int = 1) -> str:
        if f == "*":
            return "*"
        out = []
        for item in f.split(","):
            base, _, step = item.partition("/")
            base = "0" if base == "*" else base.replace("-", "..")
            base = ".".join(x.zfill(width) if x else x for x in base.split("."))
            out.append(base + (f"/{step}" if step else ""))
        return ",".join(out)

    days = ""
    if dow != "*":
        names = []
        for item in dow.split(","):
            a, _, b = item.partition("-")
            names.append(_DAYS[int(a) % 7] + (f"..{_DAYS[int(b) % 7]}" if b else ""))
        days = ",".join(names) + " "
    return f"{days}*-{part(month, 2)}-{part(dom, 2)} {part(hour, 2)}:{part(minute, 2)}:00"


def systemd_units(study: str, expr: str, argv: list[str], *, workdir: str) -> str:
    """A user service + timer for the head node (``%h`` = the user's home)."""
    unit = f"tlstudy-{study}"
    return f"""# ~/.config/systemd/user/{unit}.service
[Unit]
Description=tlstudy scheduled re-study of {study}

[Service]
Type=oneshot
WorkingDirectory={workdir}
Environment=RAY_AUTH_MODE=token
ExecStart={shlex.join(argv)}

# ~/.config/systemd/user/{unit}.timer
[Unit]
Description=tlstudy re-study of {study} ({expr})

[Timer]
OnCalendar={on_calendar(expr)}
Persistent=true

[Install]
WantedBy=timers.target

# install on the head (ray attach CONFIG), then:
#   systemctl --user daemon-reload && systemctl --user enable --now {unit}.timer
#   loginctl enable-linger "$USER"        # keep user timers running when logged out
#   systemctl --user list-timers {unit}.timer ; journalctl --user -u {unit}.service
"""


def kubernetes_cronjob(study: str, expr: str, argv: list[str]) -> str:
    """A CronJob that runs the scheduler in the project's image against a Ray cluster
    (``RAY_ADDRESS``) and an MLflow server; ``Forbid`` keeps executions from overlapping."""
    name = re.sub(r"[^a-z0-9-]", "-", f"tlstudy-{study}".lower())[:52].strip("-")
    args = "\n".join(f"                - {_yaml_str(a)}" for a in argv)
    return f"""apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: {_yaml_str(expr)}
  concurrencyPolicy: Forbid          # never two executions of one study at once
  startingDeadlineSeconds: 3600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 5          # a failed run is also FAILED in MLflow, with its reason
  jobTemplate:
    spec:
      backoffLimit: 0                # the next scheduled run retries (a failure counts as a change)
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: scheduler
              image: REGISTRY/tlstudy:latest     # an image with this project installed
              workingDir: /app
              env:
                - {{name: RAY_ADDRESS, value: "ray://RAY-HEAD-SERVICE:10001"}}
                - {{name: MLFLOW_TRACKING_URI, value: "http://MLFLOW-SERVICE:5000"}}
              command:
{args}
              volumeMounts: [{{name: runs, mountPath: /runs}}]
          volumes:
            - {{name: runs, persistentVolumeClaim: {{claimName: tlstudy-runs}}}}
"""


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
