# Sourced by scripts/*: create .venv on first use and keep it in step with pyproject.toml.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv (first run only)..." >&2
  "$py" -m venv "$venv" || { echo "error: cannot create a virtualenv with $py (Debian: apt install python3-venv)" >&2; exit 1; }
fi
stamp="$venv/.installed-$1"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip && "$venv/bin/python" -m pip install -q -e "$root[$1]"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing sipd's dependencies failed (full log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
