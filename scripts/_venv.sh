# Sourced by scripts/*: create .venv on first use and keep it in step with pyproject.toml.
# The first run takes a while (pip downloads and builds sipd's dependencies): it says what it is
# doing, one line per step (a single updating line at a terminal), with the full log kept.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}

# pip's output -> short progress lines on stderr ("Collecting rich", "Installing collected packages").
_venv_progress() {
  local line shown=0
  while IFS= read -r line; do
    case $line in
      Collecting*|"Building wheel"*|"Installing collected packages"*|Successfully*) ;;
      *) continue ;;
    esac
    line=${line%% (*}  # "Collecting rich (from ...)" -> "Collecting rich"
    if [ -t 2 ]; then printf '\r\033[K  %.100s' "$line" >&2; shown=1; else printf '  %.100s\n' "$line" >&2; fi
  done
  if [ "$shown" = 1 ]; then printf '\n' >&2; fi
}

if [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv (first run only): creating the virtualenv..." >&2
  "$py" -m venv "$venv" || { echo "error: cannot create a virtualenv with $py (Debian: apt install python3-venv)" >&2; exit 1; }
fi
stamp="$venv/.installed-$1"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  log="$venv/install.log"
  echo "installing sipd and its dependencies into $venv (about a minute the first time; log: $log)" >&2
  started=$SECONDS
  if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$root[$1]"; } 2>&1 \
      | tee "$log" | _venv_progress; then
    tail -n 20 "$log" >&2
    echo "error: installing sipd's dependencies failed (full log: $log)" >&2
    exit 1
  fi
  echo "done in $((SECONDS - started)) s" >&2
  touch "$stamp"
fi
