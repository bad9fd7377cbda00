#!/usr/bin/env bash
# Mutation testing: mutmut changes the core modules one small edit at a time (pyproject.toml [tool.mutmut]:
# steering rules, steering, vectors, directions, separation, judges, token view) and runs their fast unit tests
# against each mutant; a mutant no test notices "survives". Not in CI (minutes to hours on 2 cores).
#   bash scripts/mutation.sh            # everything configured
#   bash scripts/mutation.sh 'workbench.steer.rules*'   # one module's mutants
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import mutmut" 2>/dev/null || pip install -q 'mutmut>=3.8,<4'
python -m mutmut run --max-children "${MUTATION_JOBS:-2}" "$@" || true
python -m mutmut results --all true > mutants/results.txt 2>&1 || python -m mutmut results > mutants/results.txt 2>&1
python - <<'PY'
import collections, pathlib, re
lines = pathlib.Path("mutants/results.txt").read_text().splitlines()
table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
for line in lines:
    if m := re.match(r"\s*(workbench\.[\w.]+?)\.x\w*__mutmut_\d+:\s*(\w[\w ]*)$", line):
        table[m.group(1)][m.group(2)] += 1
# Mutants a filtered run did not reach are "not checked": they count nowhere. "no tests" and "timeout" are not kills.
print(f"{'module':<24}{'killed':>8}{'survived':>10}{'timeout':>9}{'no tests':>10}{'checked':>9}{'score':>8}")
total = collections.Counter()
for module, status in sorted(table.items()):
    checked = sum(n for s, n in status.items() if s != "not checked")
    total.update(status)
    if checked:
        print(f"{module:<24}{status['killed']:>8}{status['survived']:>10}{status['timeout']:>9}{status['no tests']:>10}"
              f"{checked:>9}{status['killed'] / checked:>8.1%}")
checked = sum(n for s, n in total.items() if s != "not checked")
print(f"mutation score: {total['killed']}/{checked} checked mutants killed ({total['killed'] / max(checked, 1):.1%}); "
      f"{total['not checked']} not checked; survivors: grep survived mutants/results.txt")
PY
