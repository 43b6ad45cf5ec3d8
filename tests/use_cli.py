"""Running dm-predict, dm-export-model and dm-eval (training.cli_use) from the tests: in a subprocess exactly as a
user would (`run_use`), or in-process through click's test runner (`invoke_use`: the same command object, its
one-line error handling included, without paying torch's import per call; a traceback would surface as
`result.exception`)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO, CliResult, train_env


def run_use(command: str, *args: object, timeout: float = 300) -> CliResult:
    code = f"import sys; sys.argv[0] = 'dm'; from training.cli_use import {command} as main; main()"
    proc = subprocess.run([sys.executable, "-c", code, *(str(a) for a in args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=train_env())
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def invoke_use(command: str, *args: object) -> CliResult:
    from click.testing import CliRunner

    import training.cli_use as cli_use

    result = CliRunner().invoke(getattr(cli_use, command), [str(a) for a in args], prog_name="dm")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught error: the user would have seen a traceback
    return CliResult(result.exit_code, result.stdout, result.stderr)
