"""The benchmarks' own virtual environment (bench/.venv): peer libraries are installed there, never into
the project's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"


def enter_venv(script: str, imports: list[str], install: list[str]) -> None:
    """Re-execute ``script`` inside bench/.venv, creating it and installing ``install`` (pip arguments)
    first when one of ``imports`` is missing there."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if os.environ.get("PREMIER_BENCH_REEXEC"):
        sys.exit(f"re-executed, but not inside {VENV} (sys.prefix={sys.prefix}); delete it and retry")
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    probe = subprocess.run([python, "-c", "import " + ", ".join(imports)], capture_output=True, check=False)
    if probe.returncode:
        print(f"installing {' '.join(install)} into {VENV}", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *install], check=True)
    os.environ["PREMIER_BENCH_REEXEC"] = "1"
    os.execv(python, [str(python), str(Path(script).resolve()), *sys.argv[1:]])
