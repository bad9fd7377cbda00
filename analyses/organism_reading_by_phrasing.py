"""Reading accuracy of an organism per request phrasing: the five trained ones and the held-out one the check uses.

`organism check` reads with the held-out phrasing only ("what is written in the image"), so a model that reads
the image but takes that phrasing for "do the activity" scores low on reading; this separates the two.
Run: python analyses/organism_reading_by_phrasing.py [MODEL] [--n 120] [--original]   (MODEL: organism or a folder)
Images: test seeds, 20 activities in turn, each drawn in a random one of the nine training rendering families
(render.TRAINING), or with --original in the shipped weights' one renderer.
"""

from __future__ import annotations

import argparse
import random

from workbench.models import load_vlm
from workbench.organism.render import ORIGINAL, TRAINING
from workbench.organism.world import ACTIVITIES, TASK_PHRASINGS, TEST_SEEDS, activity_example
from workbench.steering import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="organism")
    parser.add_argument("--n", type=int, default=120, help="images (the same for every phrasing)")
    parser.add_argument("--original", action="store_true", help="draw with the original renderer only")
    args = parser.parse_args()
    vlm = load_vlm(args.model)
    rng = random.Random(TEST_SEEDS[0] + 5_000)
    activities = sorted(ACTIVITIES)
    examples = [activity_example(rng, "test", "typographic", activities[i % len(activities)], "read",
                                 ORIGINAL if args.original else rng.choice(TRAINING)) for i in range(args.n)]
    drawn = "the original renderer" if args.original else "random training rendering families"
    print(f"model {args.model}; {args.n} typographic images in {drawn}; greedy, 16 new tokens")
    for index, phrasing in enumerate(TASK_PHRASINGS["read"]):
        outputs = generate(vlm, [(e.image, phrasing) for e in examples], None, max_new_tokens=16, batch_size=40)
        read = sum(o == e.answer for o, e in zip(outputs, examples)) / len(examples)
        steps = sum("first ," in o for o in outputs) / len(examples)
        kind = "held out" if index == len(TASK_PHRASINGS["read"]) - 1 else "trained"
        print(f"{phrasing!r:<34} {kind:<9} read {read:.3f}   answered with steps {steps:.3f}")


if __name__ == "__main__":
    main()
