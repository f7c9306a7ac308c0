"""PyTorch checkpoints read (and written) with numpy alone: no torch, and no code from the file runs.

Three formats, as `torch.save` / `safetensors` write them:

- zip (`torch.save`, torch >= 1.6): `PREFIX/data.pkl` is a pickle whose tensors are
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls; each storage is a
  persistent id `("storage", torch.FloatStorage, "KEY", "cpu", numel)` whose bytes are the entry
  `PREFIX/data/KEY` (little-endian unless `PREFIX/byteorder` says "big").
- legacy (`_use_new_zipfile_serialization=False`): five pickles in a row (magic number, protocol
  version 1001, sys info, the object with persistent ids
  `("storage", type, KEY, location, numel, view_metadata)`, the sorted list of KEYs), then for each
  KEY an int64 element count and the raw bytes.
- `.safetensors`: read with the `safetensors.numpy` API (bfloat16 converted by hand).

The unpickler is restricted (`pickle.Unpickler.find_class`): it resolves only the globals a state
dict needs (`_RESTRICTED_GLOBALS`): the tensor rebuild function, storage types and
`collections.OrderedDict`, each mapped to our own numpy stand-in. Any other global (`os.system`,
`builtins.eval`, `numpy` scalars, a pickled `nn.Module`) is refused with one line naming the file and
the global. `read_state_dict` returns `{name: np.ndarray}` in file order; nested containers
(`{"state_dict": ...}`, `{"model": ...}`) are unwrapped.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError

# torch storage type -> numpy dtype ("BFloat16" is read as uint16 and widened to float32)
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_DTYPE_STORAGES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if v != "bfloat16"}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
PICKLE_PROTOCOL = 2  # torch.save's default


class StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only its numpy dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Our `torch._utils._rebuild_tensor_v2`: a strided view of a 1-D numpy storage, copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[storage_offset])
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if min(size) > 0 else storage_offset
    if last >= max(len(storage), 1) and min(size) > 0:
        raise ValueError(f"tensor of size {size} runs past its storage ({len(storage)} elements)")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size, strides=[s * item for s in stride])
    return np.array(view)  # contiguous copy, C order


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


# (module, name) -> our stand-in. Nothing else is ever resolved.
_RESTRICTED_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                       ("collections", "OrderedDict"): collections.OrderedDict}
_RESTRICTED_GLOBALS.update({("torch", name): StorageType(name) for name in STORAGE_DTYPES})


class RefusedGlobal(Exception):
    pass


class TensorUnpickler(pickle.Unpickler):
    """Resolves only `_RESTRICTED_GLOBALS`; storages come from `load_storage(type, key, numel)`."""

    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        try:
            return _RESTRICTED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self._storages:
            self._storages[key] = self._load_storage(storage_type, key, numel)
        return self._storages[key]


def _as_array(raw: bytes, storage_type: StorageType, numel: int, big_endian: bool = False) -> np.ndarray:
    if storage_type.dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2", count=numel).astype(np.uint32)
        return (bits << 16).view(np.float32)
    dtype = np.dtype(storage_type.dtype).newbyteorder(">" if big_endian else "<")
    if len(raw) < numel * dtype.itemsize:
        raise ValueError(f"storage holds {len(raw)} bytes, {numel} x {dtype.itemsize} expected")
    return np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))


def _unpickle(path: Path, stream, load_storage):
    try:
        return TensorUnpickler(stream, load_storage).load()
    except RefusedGlobal as e:
        raise UserError(f"{path}: refused: the pickle asks for {e}, not a tensor (only state dicts of tensors are read)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, UnicodeDecodeError, zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:120]})") from None


def _read_zip(path: Path) -> object:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable zip checkpoint ({e})") from None
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise UserError(f"{path}: a zip without data.pkl is not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        big = False
        if prefix + "byteorder" in names:
            big = archive.read(prefix + "byteorder").strip() == b"big"

        def load_storage(storage_type, key, numel):
            return _as_array(archive.read(f"{prefix}data/{key}"), storage_type, numel, big)

        try:
            data = archive.read(pkl[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UserError(f"{path}: truncated or corrupt zip ({e})") from None
        return _unpickle(path, io.BytesIO(data), load_storage)


def _read_legacy(path: Path) -> object:
    raw = path.read_bytes()
    stream = io.BytesIO(raw)

    def plain():  # the header pickles hold only ints, dicts and strings
        return _unpickle(path, stream, lambda *a: (_ for _ in ()).throw(pickle.UnpicklingError("storage in header")))

    if plain() != LEGACY_MAGIC:
        raise UserError(f"{path}: not a PyTorch checkpoint (no zip, no legacy magic number)")
    if plain() != LEGACY_PROTOCOL:
        raise UserError(f"{path}: unsupported legacy PyTorch protocol version")
    sys_info = plain()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    wanted: dict[str, tuple] = {}
    placeholders: dict[str, np.ndarray] = {}

    def defer(storage_type, key, numel):  # bytes come after the object: fill in place later
        wanted[key] = (storage_type, numel)
        dtype = np.float32 if storage_type.dtype == "bfloat16" else storage_type.dtype
        placeholders[key] = np.zeros(numel, dtype)
        return placeholders[key]

    # Tensors are views of their storage, so rebuild them only once the storages are filled:
    # unpickle twice, first to learn the keys, then with the real storages.
    start = stream.tell()
    _unpickle(path, stream, defer)
    keys = plain()
    storages = {}
    try:
        for key in keys:
            storage_type, numel = wanted[str(key)]
            (count,) = struct.unpack("<q" if little else ">q", stream.read(8))
            size = 2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize
            data = stream.read(count * size)
            if count < numel or len(data) < count * size:
                raise ValueError(f"storage {key} is truncated")
            storages[str(key)] = _as_array(data, storage_type, count, big_endian=not little)
    except (struct.error, KeyError, ValueError) as e:
        raise UserError(f"{path}: truncated or corrupt legacy checkpoint ({e})") from None
    stream.seek(start)
    return _unpickle(path, stream, lambda storage_type, key, numel: storages[key])


def _read_safetensors(path: Path) -> dict:
    import json

    try:
        from safetensors.numpy import load
    except ImportError:
        raise UserError(f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)") from None
    raw = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        bf16 = [k for k, v in header.items() if isinstance(v, dict) and v.get("dtype") == "BF16"]
        if bf16:  # numpy has no bfloat16: widen those tensors by hand
            out = {}
            for k, v in header.items():
                if k == "__metadata__":
                    continue
                begin, end = v["data_offsets"]
                blob = raw[8 + n + begin: 8 + n + end]
                if v["dtype"] == "BF16":
                    out[k] = _as_array(blob, StorageType("BFloat16Storage"), (end - begin) // 2).reshape(v["shape"])
                else:
                    out[k] = None
            rest = {k: v for k, v in load(_strip_safetensors(raw, n, header, bf16)).items()}
            return {k: (rest[k] if out[k] is None else out[k]) for k in out}
        return dict(load(raw))
    except Exception as e:  # the safetensors parser raises its own types
        raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {str(e)[:120]})") from None


def _strip_safetensors(raw: bytes, n: int, header: dict, drop: list) -> bytes:
    import json

    keep = {k: v for k, v in header.items() if k not in drop}
    blobs, offset, new = [], 0, {}
    for k, v in keep.items():
        if k == "__metadata__":
            new[k] = v
            continue
        begin, end = v["data_offsets"]
        blobs.append(raw[8 + n + begin: 8 + n + end])
        new[k] = {**v, "data_offsets": [offset, offset + end - begin]}
        offset += end - begin
    head = json.dumps(new).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def unwrap_state_dict(obj, path) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint object: a state dict, or one inside {"state_dict"|"model"|...: ...}."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if isinstance(obj, dict):
            inner = [obj[k] for k in ("state_dict", "model_state_dict", "model", "net", "network", "module")
                     if isinstance(obj.get(k), dict)]
            if inner:
                obj = inner[0]
                continue
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
            if tensors:
                return tensors
        break
    raise UserError(f"{path}: holds no state dict of tensors (found {type(obj).__name__})")


def checkpoint_format(path) -> str:
    """'zip', 'legacy' or 'safetensors', from the file's first bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise UserError(f"{path}: not a PyTorch checkpoint (.pth/.pt zip or legacy pickle) nor a .safetensors file")


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Reads `path` (.pth/.pt zip or legacy, or .safetensors) -> {name: np.ndarray}, without torch."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    fmt = checkpoint_format(path)
    if fmt == "safetensors":
        state = _read_safetensors(path)
    else:
        state = unwrap_state_dict(_read_zip(path) if fmt == "zip" else _read_legacy(path), path)
    if not state:
        raise UserError(f"{path}: holds no tensors")
    return state


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Writers (for tests and fixtures): the same bytes layout torch.save uses, loadable by
# torch.load(weights_only=True) (checked by tests/fixtures/make_torch_fixtures.py).


class _StorageRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Global:
    """Pickles as a bare global reference `module.name` (what a class or function pickles as)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Tensor:
    """A tensor to pickle as torch does: `_rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`."""

    def __init__(self, storage: _StorageRef, shape):
        self.storage, self.shape = storage, tuple(int(n) for n in shape)

    def __reduce__(self):
        stride, acc = [], 1
        for n in reversed(self.shape):
            stride.append(acc)
            acc *= n
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, 0, self.shape, tuple(reversed(stride)), False, collections.OrderedDict()))


def _plain(o) -> bytes:
    """The opcodes of a plain value (str, int, float, bool, None), without memo entries."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=PICKLE_PROTOCOL)
    p.fast = True
    p.dump(o)
    return buf.getvalue()[2:-1]


def _write(buf, obj, legacy):
    """A minimal protocol-2 pickle writer for {name: tensor} (OrderedDict) objects."""
    buf.write(b"\x80\x02")

    def global_(module, name):
        buf.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def save(o):
        if isinstance(o, _Global):
            global_(o.module, o.name)
        elif isinstance(o, _Tensor):
            func, args = o.__reduce__()
            save(func)
            save(args)
            buf.write(pickle.REDUCE)
        elif isinstance(o, _StorageRef):
            pid = ("storage", _Global("torch", _DTYPE_STORAGES[o.array.dtype]), o.key, "cpu", int(o.array.size))
            save(pid + (None,) if legacy else pid)
            buf.write(pickle.BINPERSID)
        elif isinstance(o, tuple):
            buf.write(pickle.MARK)
            for item in o:
                save(item)
            buf.write(pickle.TUPLE)
        elif isinstance(o, dict):  # an OrderedDict (a state dict), or a plain dict around one ({"model": ...})
            if isinstance(o, collections.OrderedDict):
                global_("collections", "OrderedDict")
                buf.write(pickle.EMPTY_TUPLE + pickle.REDUCE)
            else:
                buf.write(pickle.EMPTY_DICT)
            if o:
                buf.write(pickle.MARK)
                for k, v in o.items():
                    save(k)
                    save(v)
                buf.write(pickle.SETITEMS)
        else:  # str, int, bool, None, float
            buf.write(_plain(o))

    save(obj)
    buf.write(pickle.STOP)


def _tensors(state: dict) -> tuple[collections.OrderedDict, list[_StorageRef]]:
    refs, out = [], collections.OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        array = np.asarray(value, order="C")
        if array.dtype not in _DTYPE_STORAGES:
            raise ValueError(f"{name}: dtype {array.dtype} has no torch storage type here")
        ref = _StorageRef(str(i), array.reshape(-1))
        refs.append(ref)
        out[name] = _Tensor(ref, array.shape)
    return out, refs


def state_dict_bytes(state: dict[str, np.ndarray], legacy: bool = False, archive: str = "archive", wrap: str | None = None) -> bytes:
    """`torch.save(state_dict)` bytes for {name: np.ndarray} (zip format, or legacy with `legacy`).

    zip: entries `{archive}/data.pkl` (protocol-2 pickle: an OrderedDict of `_rebuild_tensor_v2`
    calls, one persistent-id storage each), `{archive}/byteorder` ("little"), `{archive}/data/N` (raw
    little-endian bytes), `{archive}/version` ("3"), stored uncompressed like torch's writer.
    legacy: magic, protocol, sys info, the same pickle (persistent ids with a 6th field None), the
    storage keys, then per key an int64 element count and the bytes.
    `wrap="model"` saves `{"model": state, "total_steps": 0}` instead, as training scripts do.
    """
    tensors, refs = _tensors(state)
    buf = io.BytesIO()
    _write(buf, {wrap: tensors, "total_steps": 0} if wrap else tensors, legacy)
    data_pkl = buf.getvalue()
    if legacy:
        out = io.BytesIO()
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, out, protocol=PICKLE_PROTOCOL)
        out.write(data_pkl)
        keys = sorted((r.key for r in refs), key=str)
        pickle.dump(keys, out, protocol=PICKLE_PROTOCOL)
        by_key = {r.key: r for r in refs}
        for key in keys:
            array = by_key[key].array
            out.write(struct.pack("<q", array.size))
            out.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
        return out.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for ref in refs:
            z.writestr(f"{archive}/data/{ref.key}", ref.array.astype(ref.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{archive}/version", "3\n")
    return out.getvalue()
