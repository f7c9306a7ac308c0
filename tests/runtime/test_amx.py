"""runtime.amx: the int8 extensions a measurement names, and the switch that keeps XNNPACK off AMX."""

import subprocess
import sys
import textwrap

import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime import amx


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_int8_isa_lists_only_flags_the_cpu_has():
    flags = amx.cpu_flags()
    named = amx.int8_isa()
    assert named == "none found" or set(named.replace("(denied)", "").split()) <= flags
    assert amx.has_amx() == ("amx_int8" in flags)


def test_the_filter_is_eight_bpf_instructions():
    assert len(amx._filter_program()) == 8 * 8


@pytest.mark.skipif(not amx.has_amx(), reason="this CPU has no AMX")
def test_deny_amx_refuses_the_request_xnnpack_makes_here_and_in_children():
    """Denied in a child process (a filter cannot be removed): the request XNNPACK makes is refused
    there and in the processes it starts; before, this machine grants it."""
    result = _run("""
        import subprocess, sys
        from tfdefakeq.runtime import amx
        before = amx.amx_request_refused()
        amx.deny_amx()
        child = subprocess.run([sys.executable, "-c", "from tfdefakeq.runtime import amx; print(amx.amx_request_refused())"],
                               capture_output=True, text=True)
        print(before, amx.amx_request_refused(), child.stdout.strip(), amx.int8_isa())
    """)
    assert result.returncode == 0, result.stderr
    before, after, child, *isa = result.stdout.split()
    assert (before, after, child) == ("False", "True", "True")
    assert "amx_int8 (denied)" in " ".join(isa)


@pytest.mark.skipif(amx.has_amx(), reason="this CPU has AMX")
def test_deny_amx_is_an_error_where_there_is_none():
    with pytest.raises(UserError, match="no AMX|x86_64 Linux only"):
        amx.deny_amx()
