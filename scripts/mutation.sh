#!/usr/bin/env bash
# Mutation testing: mutmut changes the core modules one small edit at a time (pyproject.toml [tool.mutmut]:
# steering rules, steering, vectors, directions, separation, judges, token view) and runs their fast unit tests
# against each mutant; a mutant no test notices "survives". Not in CI (minutes to hours on 2 cores).
#   bash scripts/mutation.sh            # everything configured
#   bash scripts/mutation.sh 'workbench.rules*'   # one module's mutants
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import mutmut" 2>/dev/null || pip install -q 'mutmut>=3.8,<4'
python -m mutmut run --max-children "${MUTATION_JOBS:-2}" "$@" || true
python -m mutmut results --all true > mutants/results.txt 2>&1 || python -m mutmut results > mutants/results.txt 2>&1
python - <<'PY'
import collections, pathlib, re
lines = pathlib.Path("mutants/results.txt").read_text().splitlines()
status = collections.Counter(m.group(1) for line in lines if (m := re.search(r":\s*(\w[\w ]*)$", line)))
killed, total = status.get("killed", 0), sum(status.values())
print(dict(status))
print(f"mutation score: {killed}/{total} killed ({killed / max(total, 1):.1%}); survivors: mutants/results.txt")
PY
