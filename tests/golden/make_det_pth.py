#!/usr/bin/python3
"""Write the lean copy of the golden mmdetection checkpoint the tests read.

    /usr/bin/python3 tests/golden/make_det_pth.py ../shared/golden/maskrcnn_micro.pth tests/golden/maskrcnn_micro.pth

The golden maskrcnn_micro.pth (15.7 MB) holds {'meta', 'state_dict',
'optimizer'}; the optimizer's AdamW state is two thirds of it and inference
never reads it.  The copy keeps 'meta' and 'state_dict' exactly and drops
'optimizer', in the format torch.save (PyTorch 2.0) writes, so that the
loader reads it as it reads mmdetection's own files:

- data.pkl is the checkpoint read with stand-ins for the torch objects and
  written back by the pickler torch.save uses (protocol 2, storages as
  persistent ids ('storage', type, key, location, numel), keys numbered in
  the order the pickler meets them);
- the zip archive as PyTorch writes it: records under the original top
  folder, data.pkl first, then data/KEY in string order, then version;
  stored, data aligned to 64 bytes by an 'FB' extra field in the local
  header, a data descriptor after each record, zip64 end records.

Each storage keeps its bytes, dtype, numel; each tensor its offset, shape
and strides.  Python's standard library only.  To show the writer is
faithful, rewriting the whole checkpoint must give back the input byte for
byte; the script stops if it does not.
"""
import io
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

ALIGN = 64            # PyTorch aligns each record's data to 64 bytes
FLAGS = 0x0808        # data descriptor follows, UTF-8 names
ZIP64_MADE_BY, ZIP64_NEEDED = 0x031e, 45


class Storage:
    """A storage named by a persistent id; its bytes stay in the archive."""

    def __init__(self, pid):
        self.tag, self.type, self.key, self.location, self.numel = pid


class Rebuilt:
    """The result of calling a torch function (a tensor, a parameter): kept
    as the call, and pickled as the same call."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def torch_global(module, name):
    """A stand-in for torch's module.name, registered under that name so the
    pickler writes the same global reference back."""
    mod = sys.modules.get(module)
    if mod is None:
        mod = sys.modules[module] = types.ModuleType(module)
    if not hasattr(mod, name):
        if name.endswith('Storage'):
            obj = type(name, (), {'__module__': module})
        else:
            def obj(*args):
                return Rebuilt(obj, args)
            obj.__module__, obj.__name__, obj.__qualname__ = module, name, name
        setattr(mod, name, obj)
    return getattr(mod, name)


class Reader(pickle.Unpickler):
    def find_class(self, module, name):
        if module == 'torch' or module.startswith('torch.'):
            return torch_global(module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
            raise pickle.UnpicklingError('unexpected persistent id %r' % (pid,))
        return Storage(pid)


class Writer(pickle.Pickler):
    """Numbers storages as torch.save does: in the order they are met."""

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.keys = {}  # id(storage) -> (storage, new key)

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        _, key = self.keys.setdefault(id(obj), (obj, str(len(self.keys))))
        return (obj.tag, obj.type, key, obj.location, obj.numel)


def read_checkpoint(path):
    """(top folder, unpickled root, {old key: bytes}, version record)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith('/data.pkl')]
        if len(pkl) != 1:
            sys.exit('%s: not a torch zip checkpoint (no single FOLDER/data.pkl)' % path)
        folder = pkl[0][:-len('/data.pkl')]
        storages, version = {}, None
        for n in names:
            rel = n[len(folder) + 1:] if n.startswith(folder + '/') else None
            if rel is not None and rel.startswith('data/'):
                storages[rel[len('data/'):]] = z.read(n)
            elif rel == 'version':
                version = z.read(n)
            elif rel != 'data.pkl':
                sys.exit('%s: unexpected record %s' % (path, n))
        if version is None:
            sys.exit('%s: no version record' % path)
        with z.open(pkl[0]) as f:
            root = Reader(f).load()
    return folder, root, storages, version


def pickle_checkpoint(root, storages):
    """(data.pkl bytes, {new key: bytes})."""
    buf = io.BytesIO()
    w = Writer(buf)
    w.dump(root)
    return buf.getvalue(), {key: storages[s.key] for s, key in w.keys.values()}


def zip_records(folder, records):
    """The archive PyTorch's writer makes of [(name, bytes)]."""
    out, central = bytearray(), bytearray()
    for rel, data in records:
        name = ('%s/%s' % (folder, rel)).encode()
        offset = len(out)
        pad = -(offset + 30 + len(name) + 4) % ALIGN
        crc = zlib.crc32(data)
        out += struct.pack('<IHHHHHIIIHH', 0x04034b50, 0, FLAGS, 0, 0, 0, 0, 0, 0, len(name), 4 + pad)
        out += name + b'FB' + struct.pack('<H', pad) + b'Z' * pad + data
        out += struct.pack('<IIII', 0x08074b50, crc, len(data), len(data))
        central += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0, 0, FLAGS, 0, 0, 0, crc, len(data), len(data),
                               len(name), 0, 0, 0, 0, 0, offset) + name
    if len(out) >= 1 << 32:
        sys.exit('archive over 4 GiB: needs zip64 records this writer does not make')
    n, cd_offset, cd_size = len(records), len(out), len(central)
    out += central
    z64 = len(out)
    out += struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, ZIP64_MADE_BY, ZIP64_NEEDED, 0, 0, n, n, cd_size, cd_offset)
    out += struct.pack('<IIQI', 0x07064b50, 0, z64, 1)
    out += struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, n, n, cd_size, cd_offset, 0)
    return bytes(out)


def torch_archive(folder, root, storages, version):
    pkl, data = pickle_checkpoint(root, storages)
    return zip_records(folder, [('data.pkl', pkl)] + [('data/' + k, data[k]) for k in sorted(data)]
                       + [('version', version)])


def main():
    src, dst = sys.argv[1], sys.argv[2]
    if os.path.exists(dst) and os.path.samefile(src, dst):
        sys.exit('%s: the output would replace the input' % dst)
    folder, root, storages, version = read_checkpoint(src)
    if torch_archive(folder, root, storages, version) != open(src, 'rb').read():
        sys.exit('%s: rewriting the whole checkpoint does not reproduce it; not writing %s' % (src, dst))
    if set(root) != {'meta', 'state_dict', 'optimizer'}:
        sys.exit('%s: expected meta, state_dict and optimizer, found %s' % (src, sorted(root)))
    lean = {k: root[k] for k in ('meta', 'state_dict')}
    with open(dst, 'wb') as f:
        f.write(torch_archive(folder, lean, storages, version))


if __name__ == '__main__':
    main()
