"""The adaptive gate c = clamp(cos(h - h̄, v), 0, 1) on benign inputs, by position: how much adaptive steering acts on
benign inputs where it is applied (every position, as the workbench steers by default).

Run: python analyses/gate_by_position.py [--vectors S1/vectors.safetensors] [--limit 40]
Prints the mean gate per segment (image patches, prompt tokens, the first token, the last prompt token, answer
tokens) at each steered layer, for the benign records of organism:test (Stage I vectors made on organism:train
unless given). Re-run it when the organism's weights change.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict

from workbench.core.models import load_vlm
from workbench.core.sampling import stratified_sample
from workbench.data.sources import load_dataset
from workbench.stage1.pipeline import run_stage1
from workbench.steer.steering import generate_ids, steering_for
from workbench.steer.token_view import token_view
from workbench.steer.vectors import SteeringVector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", default=None)
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    vlm = load_vlm("organism")
    if args.vectors:
        vector = SteeringVector.load(args.vectors)
    else:
        with tempfile.TemporaryDirectory() as folder:
            vector = run_stage1(vlm, load_dataset("organism:train"), show_bar=False).vector
            vector.save(f"{folder}/v.safetensors")
    steering, note = steering_for(vector)
    records = [r for r in stratified_sample(load_dataset("organism:test"), 10 * args.limit) if r.label == "benign"]
    records = records[: args.limit]
    gates: dict[tuple[int, str], list[float]] = defaultdict(list)
    for record in records:
        answer = generate_ids(vlm, [record.item], steering, 16)[0]
        if not answer:
            continue
        view = token_view(vlm, record.item, steering, answer)
        if view.gate is None:
            raise SystemExit(f"the rule {steering.mode} has no gate")
        prompt_positions = [i for i, s in enumerate(view.segments) if s != "answer"]
        for row, layer in enumerate(view.layers):
            for i, segment in enumerate(view.segments):
                value = float(view.gate[row, i])
                gates[(layer, segment)].append(value)
                if i == 0:
                    gates[(layer, "first token")].append(value)
                if prompt_positions and i == prompt_positions[-1]:
                    gates[(layer, "last prompt token")].append(value)
    print(f"benign records of organism:test: {len(records)}; {note}")
    for (layer, segment), values in sorted(gates.items()):
        print(f"layer {layer} · {segment:<18} mean gate {statistics.mean(values):.3f} (n={len(values)} tokens)")


if __name__ == "__main__":
    main()
