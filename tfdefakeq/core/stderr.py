"""Native libraries (TensorFlow, LiteRT) log to file descriptor 2 from C++, past `sys.stderr` and out of reach
of any Python setting. `dropping(pattern)` captures fd 2 around such a call, drops the lines that match, and
replays the rest: real warnings and errors stay visible, and everything is replayed when the call fails."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile


@contextlib.contextmanager
def dropping(pattern: re.Pattern):
    """Runs the block with fd 2 captured; afterwards writes the captured lines that do not match `pattern`
    (all of them if the block raised) to stderr."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to filter
        yield
        return
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            if not failed:
                text = "".join(line for line in text.splitlines(True) if not pattern.match(line))
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
