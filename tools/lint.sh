#!/usr/bin/env bash
# OpenMMLab's lint (the hooks of .pre-commit-config.yaml) without GitHub:
#   bash tools/lint.sh                check only: changes nothing, exits 1 on any finding
#   bash tools/lint.sh --fix          apply the auto-fixers in place, then check
#   bash tools/lint.sh [--fix] PATH   only the files under these paths
# VENV (default .venv): the environment to lint from; requirements/lint.txt is
# installed into it (from PyPI) when a pin is missing there.
#
# Why not `pre-commit run --all-files`: pre-commit fetches each hook from its
# GitHub repository, which CI cannot reach, and its fixers always rewrite the
# files, so it has no check-only mode. This script is the same hooks without
# pre-commit: each hook's own executable at the version of its `rev:`
# (requirements/lint.txt), the hook's arguments as .pre-commit-config.yaml
# writes them (or the hook's default ones), on the files pre-commit would give
# it (the top-level `exclude`, the hook's `files` and its file types as
# pre-commit's `identify` tags them). Files: those git tracks plus new ones it
# does not ignore. The settings are in setup.cfg, read by the tools themselves.
# Check mode runs the fixers on a copy of the files and lists what they would
# change, then the checks (flake8, check-yaml, codespell, metafile, ...) run on
# that fixed copy: what they report is what --fix leaves to be fixed by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PY="$VENV/bin/python"
REQS="$ROOT/requirements/lint.txt"

FIX=0
PATHS=()
for arg in "$@"; do
    case "$arg" in
        --fix) FIX=1 ;;
        -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "[lint] unknown option '$arg' (expected --fix or paths)" >&2; exit 2 ;;
        *) PATHS+=("$(realpath -m --relative-to="$ROOT" "$arg")") ;;
    esac
done
cd "$ROOT"

if [ ! -x "$PY" ]; then
    echo "[lint] $PY not found: create the environment first (make install, or set VENV)" >&2
    exit 2
fi
# every pin of requirements/lint.txt installed at its version?
pins_ok() {
    "$PY" - "$REQS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if line:
        name, want = line.split('==')
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            print(f'[lint] {name}: {have or "not installed"} in the '
                  f'environment, requirements/lint.txt pins {want}')
            sys.exit(1)
EOF
}
if ! pins_ok; then
    echo "[lint] installing requirements/lint.txt into $VENV"
    # the stack's pins as constraints: a lint tool never moves a tested package
    "$PY" -m pip install -q --disable-pip-version-check -r "$REQS" \
        -c "$ROOT/requirements/constraints.txt"
    pins_ok
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# candidate files: tracked + untracked-not-ignored (or every file outside git)
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard > "$WORK/all"
else
    find . -type f -not -path './.git/*' -printf '%P\0' > "$WORK/all"
fi

# The plan: for each hook, in the order fixers then checks (each in the
# order of .pre-commit-config.yaml), its command and its files.
mkdir "$WORK/hooks"
"$PY" - "$WORK" "$FIX" "${PATHS[@]}" <<'EOF'
import os
import re
import shlex
import sys

import yaml
from identify.identify import tags_from_path

work, fix, paths = sys.argv[1], sys.argv[2] == '1', sys.argv[3:]
# The upstream hooks' definitions (their .pre-commit-hooks.yaml at the pinned
# revs): executable, default arguments, file selection; and which ones fix.
UPSTREAM = {
    'flake8': dict(entry='flake8', types=['python']),
    'isort': dict(entry='isort', args=['--filter-files'], fixer=True,
                  types_or=['cython', 'pyi', 'python']),
    'yapf': dict(entry='yapf', args=['-i'], types=['python'], fixer=True),
    'trailing-whitespace': dict(entry='trailing-whitespace-fixer',
                                types=['text'], fixer=True),
    'check-yaml': dict(entry='check-yaml', types=['yaml']),
    'end-of-file-fixer': dict(entry='end-of-file-fixer', types=['text'],
                              fixer=True),
    'requirements-txt-fixer': dict(entry='requirements-txt-fixer',
                                   files=r'requirements.*\.txt$', fixer=True),
    'double-quote-string-fixer': dict(entry='double-quote-string-fixer',
                                      types=['python'], fixer=True),
    'check-merge-conflict': dict(entry='check-merge-conflict',
                                 types=['text']),
    'fix-encoding-pragma': dict(entry='fix-encoding-pragma',
                                types=['python'], fixer=True),
    'mixed-line-ending': dict(entry='mixed-line-ending', types=['text'],
                              fixer=True),
    'codespell': dict(entry='codespell', types=['text']),
    'docformatter': dict(entry='docformatter', args=['-i'], types=['python'],
                         fixer=True),
}
with open('.pre-commit-config.yaml') as f:
    config = yaml.safe_load(f)
top_exclude = re.compile(config.get('exclude', '^$'))
files = [p for p in open(os.path.join(work, 'all')).read().split('\0')
         if p and os.path.isfile(p) and not top_exclude.search(p)]
tags = {p: tags_from_path(p) for p in files}
hooks = []
for repo in config['repos']:
    for hook in repo['hooks']:
        if repo['repo'] == 'local':
            spec = dict(hook, entry=shlex.split(hook['entry']))
            if spec['entry'][0] == 'python':
                spec['entry'][0] = sys.executable
        elif hook['id'] in UPSTREAM:
            spec = dict(UPSTREAM[hook['id']], **hook)
            spec['entry'] = [os.path.join(os.path.dirname(sys.executable),
                                          UPSTREAM[hook['id']]['entry'])]
        else:
            sys.exit(f'[lint] .pre-commit-config.yaml: hook {hook["id"]!r} '
                     'is not known to tools/lint.sh (add it to UPSTREAM)')
        hooks.append(spec)
hooks.sort(key=lambda h: not h.get('fixer', False))  # stable: fixers first
for n, hook in enumerate(hooks):
    include = re.compile(hook.get('files', ''))
    exclude = re.compile(hook.get('exclude', '^$'))
    chosen = [
        p for p in files
        if include.search(p) and not exclude.search(p)
        and set(hook.get('types', ['file'])) <= tags[p]
        and (not hook.get('types_or') or set(hook['types_or']) & tags[p])
        and (not paths or any(d == '.' or p == d or p.startswith(d + '/')
                              for d in paths))
    ]
    if not chosen:
        continue
    stem = os.path.join(work, 'hooks', f'{n:02d}')
    with open(stem + '.cmd', 'w') as f:
        f.write('\0'.join(hook['entry'] + list(hook.get('args', []))))
    with open(stem + '.files', 'w') as f:
        # a hook that does not take file names runs once, in the whole tree
        f.write('\0'.join(chosen if hook.get('pass_filenames', True) else []))
    with open(stem + '.meta', 'w') as f:
        f.write(f"{hook['id']} {'fix' if hook.get('fixer') else 'check'} "
                f"{len(chosen)}\n")
with open(os.path.join(work, 'files'), 'w') as f:
    f.write('\0'.join(files))
EOF

if [ "$FIX" = 1 ]; then
    TREE="$ROOT"
else
    # the fixers rewrite files: in check mode they run on a copy
    TREE="$WORK/tree"
    mkdir "$TREE"
    xargs -0 -r cp --parents -t "$TREE" < "$WORK/files"
fi

run_hook() {  # run_hook CMD FILES: the hook's command over its files, in $TREE
    local -a cmd files
    mapfile -d '' -t cmd < "$1"
    mapfile -d '' -t files < "$2"
    (cd "$TREE" && "${cmd[@]}" "${files[@]}")
}
digest() {  # digest FILES: one checksum line per file, in $TREE
    (cd "$TREE" && xargs -0 -r sha1sum < "$1")
}

FAILED=()
SUMMARY=()
for cmd in "$WORK"/hooks/*.cmd; do
    [ -e "$cmd" ] || continue
    stem="${cmd%.cmd}"
    read -r id kind n < "$stem.meta"
    if [ "$kind" = fix ]; then
        digest "$stem.files" > "$stem.before"
        set +e; out="$(run_hook "$cmd" "$stem.files" 2>&1)"; rc=$?; set -e
        digest "$stem.files" > "$stem.after"
        changed="$(diff "$stem.before" "$stem.after" | sed -n 's/^> [0-9a-f]*  //p' || true)"
        n_changed=0; [ -n "$changed" ] && n_changed="$(wc -l <<< "$changed")"
        if [ "$rc" != 0 ] && [ "$n_changed" = 0 ]; then
            echo "[lint] $id: failed (exit $rc) on $n files:"; echo "$out"
            FAILED+=("$id"); SUMMARY+=("$id: FAILED (exit $rc)")
        elif [ "$n_changed" != 0 ]; then
            if [ "$FIX" = 1 ]; then
                echo "[lint] $id: fixed $n_changed file(s):"
            else
                echo "[lint] $id: would change $n_changed file(s) (bash tools/lint.sh --fix):"
                FAILED+=("$id")
            fi
            sed 's/^/    /' <<< "$changed"
            SUMMARY+=("$id: $n_changed of $n file(s) $([ "$FIX" = 1 ] && echo fixed || echo to fix)")
        else
            SUMMARY+=("$id: ok ($n files)")
        fi
    else
        set +e; out="$(run_hook "$cmd" "$stem.files" 2>&1)"; rc=$?; set -e
        if [ "$rc" != 0 ]; then
            echo "[lint] $id: findings (exit $rc):"; echo "$out"
            FAILED+=("$id")
            # flake8-style findings (path:line:col: CODE ...): counted per rule
            rules="$(grep -oE '^[^:]+:[0-9]+:[0-9]+: [A-Z]+[0-9]+' <<< "$out" \
                | awk '{print $NF}' | sort | uniq -c | sort -rn \
                | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')"
            SUMMARY+=("$id: $(grep -c . <<< "$out") line(s) of findings${rules:+ ($rules)}")
        else
            SUMMARY+=("$id: ok ($n files)")
        fi
    fi
done

echo "[lint] summary ($([ "$FIX" = 1 ] && echo fix || echo check) mode, $VENV):"
printf '    %s\n' "${SUMMARY[@]}"
if [ "${#FAILED[@]}" != 0 ]; then
    echo "[lint] FAILED: ${FAILED[*]}"
    exit 1
fi
echo "[lint] all clean"
