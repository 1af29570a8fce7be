"""Cold start: fresh interpreters, fluxmail's set-up line vs `import pydantic_settings`.

    python bench/cold_start.py [--runs 21] [--quick]

Issue 2: median ratio <= 1.10, and `import fluxmail` must not import aiosmtplib, asyncio, rich,
yaml or sqlite3. Each command runs in a temporary folder (no `.env` or `.fluxmail/` of the
repository), twice: with FLUXMAIL_TYPE=memory, and configured for an SMTP server (what a Lambda
holds; building the mailer opens no connection), so no server is needed. The target is checked
on the slower of the two.

Wall time on a shared machine moves by 10-20 % between runs, so where valgrind is installed the
same commands are also counted in CPU instructions (callgrind), which repeat to within ~0.1 %.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _common import (
    VENV_033,
    Check,
    clean_env,
    ensure_core_venv,
    fmt,
    median,
    print_checks,
    print_table,
    rounds_order,
    save_results,
)

FLUXMAIL = "from fluxmail import FluxMail; FluxMail.from_env()"
REFERENCE = "import pydantic_settings"
DEV = " (development venv)"
SMTP = " (SMTP server configured)"
# A login configured, never used: building the mailer opens no connection.
SMTP_SETTINGS = {
    "FLUXMAIL_HOST": "smtp.example.com",
    "FLUXMAIL_USERNAME": "bench",
    "FLUXMAIL_PASSWORD": "cold-start",
}
# Not PYTHONDONTWRITEBYTECODE: a deployed function has its .pyc files, the warm-up writes them.
UNSET = ("PYTHONDONTWRITEBYTECODE",)
FORBIDDEN = ("aiosmtplib", "asyncio", "rich", "yaml", "sqlite3")
# Not forbidden, but worth seeing: what a Lambda cold start pays for.
NOTEWORTHY = ("ssl", "email.message", "pydantic", "dotenv", "certifi", "typer", "psycopg")
MODULES_PROBE = """
import json, sys
before, found = set(sys.modules), {}
try:
    import fluxmail
    found["import"] = sorted(set(sys.modules) - before)
    from fluxmail import FluxMail
    FluxMail.from_env()
    found["from_env"] = sorted(set(sys.modules) - before)
except Exception as exc:
    found["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


@dataclass
class Command:
    label: str
    python: str
    code: str
    env: dict[str, str]
    times_ms: list[float] = field(default_factory=list)
    note: str = ""


def commands(folder: str) -> list[Command]:
    """The target pair in a venv with the core install only (what a Lambda holds), then the
    same pair in the development venv and 0.3.3 as reference rows."""
    env = _env(FLUXMAIL_TYPE="memory", FLUXMAIL_SENDER="bench@example.com")
    core, why = ensure_core_venv()
    found = [Command("python -c pass", sys.executable, "pass", env)]
    if core is not None:
        core_env = _env(isolated=True, FLUXMAIL_TYPE="memory", FLUXMAIL_SENDER="b@x.org")
        smtp_env = _env(isolated=True, FLUXMAIL_SENDER="b@x.org", **SMTP_SETTINGS)
        found += [
            Command(REFERENCE, core, REFERENCE, core_env),
            Command(FLUXMAIL, core, FLUXMAIL, core_env),
            Command(FLUXMAIL + SMTP, core, FLUXMAIL, smtp_env),
        ]
    else:
        print(f"(core venv unavailable, {why}: measuring in the development venv)")
    found += [
        Command(REFERENCE + DEV, sys.executable, REFERENCE, env),
        Command(FLUXMAIL + DEV, sys.executable, FLUXMAIL, env),
    ]
    old = VENV_033 / "bin" / "python"
    if old.exists():  # created by throughput.py; a reference row only
        old_env = _env(isolated=True, FLUXMAIL_HOST="127.0.0.1")
        found.append(Command("the same, PyPI fluxmail 0.3.3", str(old), FLUXMAIL, old_env))
    return found


def _env(isolated: bool = False, **extra: str) -> dict[str, str]:
    env = clean_env(isolated, **extra)
    for name in UNSET:
        env.pop(name, None)
    return env


def run_once(command: Command, folder: str) -> tuple[float, str]:
    """Wall time of one fresh interpreter, in ms; the error's last line if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(
        [command.python, "-c", command.code],
        cwd=folder,
        env=command.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    took = (time.perf_counter() - start) * 1000
    error = (proc.stderr.strip().splitlines() or ["(no message)"])[-1] if proc.returncode else ""
    return took, error


def time_commands(cmds: list[Command], runs: int, folder: str) -> None:
    for command in cmds:  # warm-up: writes .pyc files, fills the page cache, finds failures
        _, command.note = run_once(command, folder)
    active = [c for c in cmds if not c.note]
    for number in range(runs):
        for label in rounds_order([c.label for c in active], number):
            command = next(c for c in active if c.label == label)
            command.times_ms.append(run_once(command, folder)[0])


def import_report(folder: str) -> dict[str, Any]:
    """The modules `import fluxmail` and then `from_env()` added to sys.modules."""
    env = _env(FLUXMAIL_TYPE="memory", FLUXMAIL_SENDER="bench@example.com")
    proc = subprocess.run(
        [sys.executable, "-c", MODULES_PROBE],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["(no message)"])[-1]}
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def import_times(folder: str) -> tuple[Counter[str], Counter[str]]:
    """Self import time (us) of the set-up line per top-level package and per fluxmail module."""
    env = _env(FLUXMAIL_TYPE="memory", FLUXMAIL_SENDER="bench@example.com")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FLUXMAIL],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    packages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            module, micros = parts[2].strip(), int(parts[0])
            packages[module.split(".")[0]] += micros
            if module.split(".")[0] == "fluxmail":
                own[module] += micros
    return packages, own


def present(modules: list[str], names: Sequence[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def module_checks(folder: str) -> list[Check]:
    found = import_report(folder)
    name = "import fluxmail loads none of " + ", ".join(FORBIDDEN)
    if "import" not in found:
        return [Check(name, f"fluxmail not importable: {found.get('error')}", None)]
    heavy = present(found["import"], FORBIDDEN)
    print(f"\n`import fluxmail` added {len(found['import'])} modules")
    if "from_env" in found:
        after = found["from_env"]
        print(
            f"  after from_env(): {len(after)} modules; forbidden ones among them: "
            f"{present(after, FORBIDDEN) or 'none'}; also: {present(after, NOTEWORTHY)}"
        )
        packages, own = import_times(folder)
        print("  import time of the set-up line by package (ms, summed self time):")
        print("    " + ", ".join(f"{m} {us / 1000:.1f}" for m, us in packages.most_common(8)))
        print("  slowest fluxmail modules (ms, self time):")
        print("    " + ", ".join(f"{m} {us / 1000:.1f}" for m, us in own.most_common(6)))
    else:
        print(f"  from_env() failed: {found.get('error')}")
    return [Check(name, f"loaded: {', '.join(heavy)}" if heavy else "none loaded", not heavy)]


def ratio_check(cmds: list[Command]) -> Check:
    name = "cold start: from_env() <= 1.10x import pydantic_settings"
    by_label = {c.label: c for c in cmds}
    if FLUXMAIL not in by_label:  # no core venv: the development venv's pair, said so
        name += DEV
        fluxes, ref = [by_label[FLUXMAIL + DEV]], by_label[REFERENCE + DEV]
    else:
        fluxes, ref = [by_label[FLUXMAIL], by_label[FLUXMAIL + SMTP]], by_label[REFERENCE]
        name += " (the slower of memory and SMTP)"
    failed = [f for f in fluxes if f.note or not f.times_ms]
    if failed:
        return Check(name, f"fluxmail set-up failed: {failed[0].note}", None)
    flux = max(fluxes, key=lambda f: median(f.times_ms))
    ratio = median(flux.times_ms) / median(ref.times_ms)
    detail = f"{median(flux.times_ms):.1f} / {median(ref.times_ms):.1f} ms = {ratio:.2f}x"
    return Check(name, detail, ratio <= 1.10)


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions(command: Command, folder: str) -> int | None:
    """CPU instructions one fresh interpreter runs (callgrind); None if it could not count."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", command.python,
         "-c", command.code],
        cwd=folder, env=command.env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    found = _COLLECTED.search(proc.stderr)
    return int(found.group(1)) if proc.returncode == 0 and found else None


def instruction_rows(cmds: list[Command], folder: str) -> tuple[list[list[str]], Check | None]:
    """The core venv's commands counted once each; the check on the slower fluxmail row."""
    wanted = [c for c in cmds if c.label in (REFERENCE, FLUXMAIL, FLUXMAIL + SMTP) and not c.note]
    if shutil.which("valgrind") is None or len(wanted) < 3:
        return [], None
    counts = {c.label: instructions(c, folder) for c in wanted}
    ref = counts[REFERENCE]
    if ref is None:
        return [], None
    rows = [
        [label, fmt(count / 1e6, 1) if count else "-", fmt(count / ref, 3) if count else "-"]
        for label, count in counts.items()
    ]
    flux = [n for label, n in counts.items() if label != REFERENCE and n]
    name = "cold start in CPU instructions (callgrind): from_env() <= 1.10x"
    if len(flux) < 2:
        return rows, Check(name, "callgrind could not count a fluxmail row", None)
    ratio = max(flux) / ref
    detail = f"{max(flux) / 1e6:.1f}M / {ref / 1e6:.1f}M = {ratio:.3f}x"
    return rows, Check(name, detail, ratio <= 1.10)


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="interleaved runs per command")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="fluxmail-cold-") as folder:
        cmds = commands(folder)
        print(f"Cold start: {len(cmds)} commands x {runs} interleaved runs", flush=True)
        time_commands(cmds, runs, folder)
        refs = {c.label: median(c.times_ms) for c in cmds if c.label.startswith(REFERENCE)}

        def base(c: Command) -> float:  # the reference measured in the same venv
            return refs.get(REFERENCE + DEV if c.label.endswith(DEV) else REFERENCE, float("nan"))

        rows = [
            [c.label, fmt(median(c.times_ms), 1), fmt(median(c.times_ms) / base(c), 2),
             c.note[:80] or f"{min(c.times_ms):.1f} .. {max(c.times_ms):.1f}"]
            for c in cmds
        ]  # fmt: skip
        print()
        print_table(["command (fresh interpreter)", "median ms", "x pydantic_settings",
                     "min .. max ms / error"], rows)  # fmt: skip
        checks = [ratio_check(cmds), *module_checks(folder)]
        counted, counted_check = ([], None) if args.quick else instruction_rows(cmds, folder)
        if counted:
            print("\nThe same commands in CPU instructions (callgrind, one run each):")
            print_table(["command (fresh interpreter)", "M instructions", "x pydantic_settings"],
                        counted)  # fmt: skip
        if counted_check is not None:
            checks.append(counted_check)
    print_checks("Issue 2 cold-start targets:", checks)
    save_results("cold_start", {
        "runs": runs, "times_ms": {c.label: c.times_ms for c in cmds},
        "checks": [str(check) for check in checks], "instructions": counted,
    })  # fmt: skip
    return checks


if __name__ == "__main__":
    main()
