# Sourced by the run scripts: makes .venv with Python 3.12 and this package installed with its
# test extras (once; later calls reuse it), then activates it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

find_python312() {
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c "" >/dev/null 2>&1; then
    command -v python3.12
    return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in "$(pyenv root)"/versions/3.12*/bin/python3.12; do
      if [ -x "$candidate" ]; then echo "$candidate"; return; fi
    done
  fi
  echo "error: Python 3.12 not found (tried python3.12 on PATH and \$(pyenv root)/versions/3.12*)" >&2
  return 1
}

if [ ! -f "$ROOT/.venv/.installed" ] || [ "$ROOT/pyproject.toml" -nt "$ROOT/.venv/.installed" ] \
    || [ "$ROOT/setup.py" -nt "$ROOT/.venv/.installed" ]; then
  PYTHON="$(find_python312)"
  echo "setting up $ROOT/.venv with $PYTHON" >&2
  "$PYTHON" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT[test]"
  touch "$ROOT/.venv/.installed"
fi
source "$ROOT/.venv/bin/activate"
cd "$ROOT"
