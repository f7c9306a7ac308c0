"""Which int8 instructions this CPU offers XNNPACK, and a switch that keeps it off Intel AMX.

Why it matters (issue 16, measured 2026-12-05 on a 2-core Intel Xeon with AMX, ai-edge-litert 2.3.0):
on a CPU with AMX, XNNPACK runs int8 convolutions with its AMX GEMM kernel, whose tile always computes
64 output channels. A conv with 1-16 output channels then costs as much as one with 64: a 1x1 conv
3 -> 1..64 channels at 256 px took ~1.0 ms in int8 against 0.11-0.71 ms in float32, and
MesoInception-4 ran int8 at 2.5x its float32 time. Denied AMX, XNNPACK picks its AVX-512 int8
kernels and the same conv takes 0.20 ms. The float32 kernels never use AMX.

Linux hands AMX tile state to a process only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`;
XNNPACK asks for it when it initialises and falls back to AVX-512 if refused. `deny_amx()` installs a
seccomp filter that refuses exactly that request (EPERM), for this process and its children, so it
must run before the interpreter is created. It cannot be undone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from pathlib import Path

from tfdefakeq.core.errors import UserError

ARCH_REQ_XCOMP_PERM = 0x1023
_SYS_ARCH_PRCTL = 158  # x86_64
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_EPERM = 1
# flags that name an int8 dot-product / matrix unit (x86: /proc/cpuinfo "flags"; ARM: "Features")
_INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm", "sve2")

_denied = False


def cpuinfo_fields() -> dict[str, str]:
    """/proc/cpuinfo's non-empty fields, lower-cased keys, the first CPU's value of each ({} if unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    """x86 "flags" or ARM "Features" of /proc/cpuinfo."""
    fields = cpuinfo_fields()
    return set((fields.get("flags") or fields.get("features") or "").split())


def has_amx() -> bool:
    return "amx_int8" in cpu_flags()


def int8_isa() -> str:
    """The int8 dot-product / matrix extensions of this CPU, e.g. 'amx_int8 avx512_vnni' ('amx_int8
    (denied)' after deny_amx()), or 'none found'."""
    flags = cpu_flags()
    found = [f + (" (denied)" if f == "amx_int8" and _denied else "") for f in _INT8_FLAGS if f in flags]
    return " ".join(found) or "none found"


def _filter_program() -> bytes:
    """Classic BPF: on x86_64, arch_prctl(ARCH_REQ_XCOMP_PERM, ...) -> EPERM; every other call allowed."""
    def stmt(code, k):
        return struct.pack("HBBI", code, 0, 0, k)

    def jump(code, k, jt, jf):
        return struct.pack("HBBI", code, jt, jf, k)

    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    return b"".join([
        stmt(ld_w_abs, 4),                              # seccomp_data.arch
        jump(jeq_k, _AUDIT_ARCH_X86_64, 0, 4),
        stmt(ld_w_abs, 0),                              # seccomp_data.nr
        jump(jeq_k, _SYS_ARCH_PRCTL, 0, 2),
        stmt(ld_w_abs, 16),                             # seccomp_data.args[0], low half
        jump(jeq_k, ARCH_REQ_XCOMP_PERM, 1, 0),
        stmt(ret_k, _SECCOMP_RET_ALLOW),
        stmt(ret_k, _SECCOMP_RET_ERRNO | _EPERM),
    ])


def deny_amx() -> None:
    """Keeps this process (and its children) off AMX: see the module docstring. A one-line UserError
    where there is no AMX to deny (the caller's flag would change nothing) or the filter cannot be set."""
    global _denied
    if _denied:
        return
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise UserError(f"AMX exists on x86_64 Linux only; this is {platform.system()} {platform.machine()}")
    if not has_amx():
        raise UserError("this CPU has no AMX (no amx_int8 in /proc/cpuinfo): denying it would change nothing")
    program = _filter_program()
    filters = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program) // 8, ctypes.cast(filters, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise UserError(f"cannot install the seccomp filter that denies AMX: {os.strerror(ctypes.get_errno())}")
    _denied = True


def amx_request_refused() -> bool:
    """Asks the kernel for AMX tile data the way XNNPACK does; True if refused (EPERM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    xfeature_xtiledata = 18
    return libc.syscall(_SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, xfeature_xtiledata) != 0 and ctypes.get_errno() == _EPERM
