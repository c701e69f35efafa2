"""`tierlm bench` command-line errors: one line naming the flag, before any benchmark work."""
from __future__ import annotations

import subprocess
import sys


def test_multiturn_output_dir_that_is_a_file(tmp_path):
    target = tmp_path / "results"
    target.write_text("")
    r = subprocess.run([sys.executable, "-m", "tierlm", "bench", "multiturn", "--output-dir", str(target)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"tierlm bench: error: --output-dir '{target}' exists and is not a directory"
