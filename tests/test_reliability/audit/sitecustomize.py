"""Test helper, imported by Python at start-up when this folder is on
PYTHONPATH (test_distributed.py): with AUDIT_WRITES_DIR and AUDIT_WORK_DIR set,
records every file the process (and its forked data workers) opens for writing
or renames into place under AUDIT_WORK_DIR, one file per rank and pid."""
import os
import sys

_dir = os.environ.get('AUDIT_WRITES_DIR')
_root = os.environ.get('AUDIT_WORK_DIR')
if _dir and _root:
    _tag = f"rank{os.environ.get('RANK', '-single')}_pid{os.getpid()}"
    _out = open(os.path.join(_dir, f'writes_{_tag}.txt'), 'a', buffering=1)
    _W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        try:
            if event == 'open':
                path, mode, flags = args
                if not isinstance(path, (str, bytes, os.PathLike)):
                    return
                path = os.fsdecode(path)
                if mode is not None:
                    writes = any(c in mode for c in 'wax+')
                else:
                    writes = isinstance(flags, int) and bool(flags & _W)
                if writes and os.path.abspath(path).startswith(_root):
                    _out.write(f'{os.getpid()} open {path}\n')
            elif event in ('os.rename', 'os.replace'):
                dst = os.fsdecode(args[1])
                if os.path.abspath(dst).startswith(_root):
                    _out.write(f'{os.getpid()} {event} {dst}\n')
        except Exception:
            pass

    sys.addaudithook(_hook)
