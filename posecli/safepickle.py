"""Read the pickle inside a .pth file without importing or calling anything the file names.

``torch.load(weights_only=True)`` refuses any class outside its allow-list, so it refuses the
checkpoints MMPose training runs write: their ``message_hub`` holds mmengine ``HistoryBuffer``
objects, numpy scalars and ``getattr(HistoryBuffer, 'mean')``. This unpickler keeps
weights_only's rules for what it builds for real (tensors, storages, containers, torch's
rebuild functions, the numpy array types MMPose metadata uses) and turns every other name
into a stand-in:

- an ``Unknown`` is a name from the file (``mmengine.logging.history_buffer.HistoryBuffer``).
  It is never imported or looked up; it only records the name.
- calling an ``Unknown`` (REDUCE, NEWOBJ, INST, OBJ) makes an ``Inert``: the name and the
  arguments, kept as data. BUILD, SETITEMS and APPENDS on an ``Inert`` record their values.
  ``builtins.getattr`` is only ever applied to stand-ins, giving another ``Unknown``.
- a name that means running something (``os.system``, ``builtins.eval``, ``subprocess``,
  ``importlib``, ...) makes the whole file ``Refused``. Stand-ins are never called, so that
  list is not what keeps code from running; it makes posecli say "refused" instead of
  quietly ignoring what a hostile file tried.

Everything the pickle can call is therefore in weights_only's allow-list. Use through
``read_torch_file``; torch calls this module's ``Unpickler`` and ``load`` (the pickle-module
protocol of ``torch.load``).
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import sys
import tarfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch


class Refused(pickle.UnpicklingError):
    """The file names something that runs code; nothing from it was run."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Unknown:
    """A class or function the file names; never imported, never called."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<unknown {self.name}>"


class Inert:
    """An object the file builds from an ``Unknown``: its name and what the pickle gave it, as data."""

    __slots__ = ("name", "args", "state", "items")

    def __init__(self, name: str, args: tuple):
        self.name, self.args, self.state, self.items = name, args, None, []

    def __repr__(self) -> str:
        return f"<inert {self.name}>"


# What a weights file never needs to name. For the message only (see the module docstring).
_CODE_MODULES = frozenset(
    "os posix nt subprocess sys shutil importlib imp runpy pkgutil zipimport code codeop compileall py_compile "
    "types ctypes _ctypes cffi marshal pickle _pickle cPickle dill cloudpickle joblib shelve socket ssl http urllib "
    "ftplib smtplib telnetlib webbrowser pty tty signal multiprocessing concurrent threading _thread asyncio pdb "
    "bdb timeit profile cProfile trace operator _operator io _io codecs _codecs tempfile glob platform sysconfig "
    "site distutils setuptools pip ensurepip venv".split()
)
_CODE_PREFIXES = ("torch.load", "torch.hub", "torch.jit", "torch.package", "torch.utils.cpp_extension", "torch.ops.",
                  "torch.library", "torch._dynamo", "torch._inductor", "torch.serialization", "numpy.load",
                  "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.lib.npyio")  # fmt: skip
# builtins a data pickle may name: value types. The rest (eval, exec, compile, open, __import__, ...) is code.
_BUILTIN_DATA = frozenset("set frozenset bytearray bytes complex slice range int float str bool list dict tuple".split())


def runs_code(name: str) -> bool:
    """Whether a dotted name from a pickle points at commands, code, imports, files or sockets."""
    module, _, attr = name.rpartition(".")
    top = name.split(".")[0]
    if top == "builtins":
        return module != "builtins" or attr not in _BUILTIN_DATA
    return top in _CODE_MODULES or any(name == p or name.startswith(p.rstrip(".") + ".") for p in _CODE_PREFIXES)


def _numpy_globals() -> dict[str, object]:
    """The numpy array types MMPose metadata pickles, under the names numpy 1.x and 2.x write."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{module}._reconstruct"] = multiarray._reconstruct
    for t in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"):
        cls = type(np.dtype(t))
        out[f"{cls.__module__}.{cls.__name__}"] = cls
    return out


def _allowed() -> dict[str, object]:
    # torch's own weights_only table (private, but exactly the semantics to keep), plus numpy's array types.
    # Without the legacy sparse tensor classes: torch checks what they build only in its own unpickler.
    from torch._weights_only_unpickler import _get_allowed_globals

    table = {k: v for k, v in _get_allowed_globals().items() if not k.startswith(("torch.sparse.", "torch.cuda.sparse."))}
    return {**table, **_numpy_globals()}


_GETATTR = "builtins.getattr"


class Unpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler with every opcode that resolves, calls or mutates restricted."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, stand_ins: bool = False, **kwargs):
        super().__init__(file, **kwargs)
        self.stand_ins = stand_ins
        self.allowed = _allowed()
        self.callables = {id(v): v for v in self.allowed.values()}
        self.types = {id(v): v for v in self.allowed.values() if isinstance(v, type)}

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        return self._unknown(full)

    def _unknown(self, name: str) -> Unknown:
        if name == _GETATTR and self.stand_ins:
            return Unknown(name)  # MMPose's HistoryBuffer pickles getattr(HistoryBuffer, 'mean'); see _getattr
        if runs_code(name):
            raise Refused(name)
        if not self.stand_ins:
            raise pickle.UnpicklingError(f"holds {name}, which weights_only does not allow")
        return Unknown(name)

    def _is(self, obj, table: dict) -> bool:
        return table.get(id(obj)) is obj

    def _call(self, func, args):
        """REDUCE, INST and OBJ: allowed callables run, stand-ins record, anything else is refused."""
        if isinstance(func, Unknown):
            if func.name == _GETATTR:
                return self._getattr(*args)
            return Inert(func.name, tuple(args))
        if not self._is(func, self.callables):
            raise pickle.UnpicklingError(f"cannot call {type(func).__name__} objects")
        return func(*args)

    def _getattr(self, obj, attr, *default):
        # A real getattr on a real object is the classic gadget; on a stand-in it only names a stand-in.
        if not isinstance(obj, (Unknown, Inert)) or type(attr) is not str or default:
            raise Refused(f"builtins.getattr on a {type(obj).__name__}")
        return self._unknown(f"{obj.name}.{attr}")

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls, args, kwargs=None):
        if isinstance(cls, Unknown):
            return self._call(cls, args)
        if not self._is(cls, self.types):
            raise pickle.UnpicklingError(f"cannot create {type(cls).__name__} objects")
        return cls.__new__(cls, *args, **(kwargs or {}))

    def load_newobj(self):
        args = self.stack.pop()
        self.append(self._new(self.stack.pop(), args))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.append(self._new(self.stack.pop(), args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):  # INST and OBJ (protocols 0 and 1)
        self.append(self._call(klass, args) if isinstance(klass, Unknown) else self._new(klass, args))

    def load_build(self):
        inst = self.stack[-2]  # below the state
        if isinstance(inst, Inert):
            inst.state = self.stack.pop()
        elif self._is(type(inst), self.types):  # tensors, numpy arrays and dtypes, OrderedDict
            super().load_build()
        else:
            raise pickle.UnpicklingError(f"cannot set the state of {type(inst).__name__} objects")

    dispatch[pickle.BUILD[0]] = load_build

    def _target(self, kinds: tuple):
        target = self.stack[-1]
        if isinstance(target, Inert) or type(target) in kinds:
            return target
        raise pickle.UnpicklingError(f"cannot add items to {type(target).__name__} objects")

    def load_append(self):
        value = self.stack.pop()
        target = self._target((list,))
        (target.items if isinstance(target, Inert) else target).append(value)

    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        values = self.pop_mark()
        target = self._target((list,))
        (target.items if isinstance(target, Inert) else target).extend(values)

    dispatch[pickle.APPENDS[0]] = load_appends

    def _set(self, items: list):
        target = self._target((dict, OrderedDict, Counter))
        if isinstance(target, Inert):
            target.items.extend(zip(items[::2], items[1::2]))
        else:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._set([key, value])

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._set(self.pop_mark())

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        values = self.pop_mark()
        target = self._target((set,))
        (target.items.extend if isinstance(target, Inert) else target.update)(values)

    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_binpersid(self):
        pid = self.stack.pop()  # torch's persistent ids: ('storage', storage type, key, location, numel)
        kind = pid[0] if type(pid) is tuple and pid else None
        if (kind.decode("latin-1") if type(kind) is bytes else kind) != "storage":
            raise pickle.UnpicklingError("only tensor storages may be loaded by reference")
        self.append(self.persistent_load(pid))

    dispatch[pickle.BINPERSID[0]] = load_binpersid

    def _refuse_opcode(self):
        raise pickle.UnpicklingError("unsupported pickle opcode (protocol 0 references or copyreg extensions)")

    for _op in (pickle.PERSID, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse_opcode
    del _op


def load(file, **kwargs):
    """``pickle.load`` through the restricted unpickler (torch reads a legacy file's header with it)."""
    return Unpickler(file, **kwargs).load()


def read_torch_file(path: str | Path, stand_ins: bool) -> object:
    """``torch.load`` of a .pth with this module's unpickler; ``stand_ins=False`` refuses unknown names too.

    Raises ``Refused`` for code, ``pickle.UnpicklingError`` for names outside the allow-list, and
    whatever torch raises for a damaged file.
    """
    ser = torch.serialization
    with open(path, "rb") as f:
        if ser._is_zipfile(f):
            # torch.load would hand a TorchScript archive to torch.jit.load; check with torch's own reader.
            with ser._open_zipfile_reader(f) as zf:
                if ser._is_torchscript_zip(zf):
                    raise Refused("TorchScript code (a torch.jit archive, not a checkpoint)")
        elif tarfile.is_tarfile(f):  # torch < 0.4 files; weights_only refuses them too
            raise pickle.UnpicklingError("a tar checkpoint of torch < 0.4, which cannot be read without running it")
        f.seek(0)
        if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
            return torch.load(f, map_location="cpu", weights_only=True)  # torch's own reader, as the user asked
        # weights_only=False only because torch accepts no pickle_module otherwise: Unpickler is the restriction.
        return torch.load(f, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False,
                          stand_ins=stand_ins)  # fmt: skip
