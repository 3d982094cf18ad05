"""Lightning's console chatter stays silenced however the imports happen to be ordered."""

import subprocess
import sys


def test_quiet_before_lightning_is_imported_stays_quiet():
    # a fresh interpreter: quiet_lightning is called before anything imported lightning.pytorch,
    # whose import sets its logger to INFO; the accelerator banner must not reach the console.
    code = ("import logging\n"
            "from localframe.train.trainer import quiet_lightning, build_trainer\n"
            "quiet_lightning(logging.ERROR)\n"
            "build_trainer()\n"
            "print('built')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "built" in done.stdout
    assert "GPU available" not in done.stdout + done.stderr
