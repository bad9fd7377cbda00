"""The three extension points, used as ARCHITECTURE.md tells a newcomer to: a steering rule, a reward term
and a dataset source, each one function and one registration, picked up by the library, CLI and app lists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import make_image, tiny

from workbench.cli.main import build_parser
from workbench.core.records import Record
from workbench.data.sources import SOURCES, dataset_choices, load_dataset, register_source
from workbench.rewards.combined import REWARD_TERMS, RewardModel, RewardTerm, RewardWeights, register_reward_term
from workbench.rewards.toxicity import ToxicityScorer
from workbench.steer.rules import RULES, modes, register_rule
from workbench.steer.steering import Steering, generate, steer_hidden
from workbench.steer.vectors import SteeringVector


@pytest.fixture
def toy_rule() -> Iterator[str]:
    """ARCHITECTURE.md's worked example: a rule that caps the projection on v̂ at alpha."""

    def capped(h: torch.Tensor, unit: torch.Tensor, direction: torch.Tensor, alpha: float | torch.Tensor,
               calibration: torch.Tensor | None) -> torch.Tensor:
        projection = h @ unit
        return h - (projection - projection.clamp(max=alpha)).unsqueeze(-1) * unit

    register_rule("capped", capped, needs_calibration=False, defence_sign="smaller alpha caps harder")
    yield "capped"
    del RULES["capped"]


def test_every_rule_is_the_identity_at_zero_strength() -> None:
    hidden = torch.randn(2, 5, 8)
    for mode in modes():
        out = steer_hidden(hidden, torch.randn(8), mode, 0.0, torch.randn(8))
        torch.testing.assert_close(out, hidden, rtol=0, atol=0)


def test_a_new_rule_steers_generation_and_appears_in_every_choice_list(toy_rule: str) -> None:
    parser = build_parser()
    args = parser.parse_args(["steer", "--model", "organism", "--vectors", "v.safetensors", "--prompt", "hi",
                              "--mode", toy_rule])
    assert args.mode == toy_rule and toy_rule in modes()
    hidden = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(steer_hidden(hidden, torch.tensor([1.0, 0.0]), toy_rule, 1.0),
                               torch.tensor([[1.0, 4.0]]))
    vlm = tiny("llava")
    vector = SteeringVector({1: torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(0)) * 50})
    items = [(make_image("red"), "what is this")]
    plain = generate(vlm, items, None, max_new_tokens=6)
    assert generate(vlm, items, Steering(vector, toy_rule, 1e3), max_new_tokens=6) == plain  # cap never reached
    assert generate(vlm, items, Steering(vector, toy_rule, -1e3), max_new_tokens=6) != plain


def test_a_new_reward_term_is_weighted_and_logged_by_name() -> None:
    length = register_reward_term(RewardTerm("brevity", "mean_length", lambda b: [float(len(t)) for t in b.texts],
                                             lambda value, label: -value / 100, default_weight=1.0))
    try:
        model = RewardModel(ToxicityScorer.fallback(), None, RewardWeights(toxicity=0.0, fluency=0.0, refusal=0.0))
        scored = model.score([None, None], ["short", "a much longer answer"], ["benign", "benign"], [1.0, 1.0])
        assert scored.total[0] > scored.total[1]
        assert scored.means()["mean_length"] == pytest.approx(12.5)
        assert RewardWeights()["brevity"] == length.default_weight
        with pytest.raises(ValueError, match="unknown reward weight"):
            RewardWeights(brevty=1.0)
    finally:
        del REWARD_TERMS["brevity"]


def test_a_new_source_loads_by_name_and_is_offered() -> None:
    register_source("toyset", lambda arg: [Record(f"prompt {arg}", "harmful", "toy")], "a toy source",
                    choices=("toyset:a",))
    try:
        assert [r.prompt for r in load_dataset("toyset:a")] == ["prompt a"]
        assert "toyset:a" in dataset_choices("tiny-random:llava")
        assert "organism:train" not in dataset_choices("tiny-random:llava")
        assert "organism:train" in dataset_choices("organism")
        with pytest.raises(ValueError) as error:
            register_source("TOYSET", lambda arg: [], "again")
        assert str(error.value) == "dataset source 'TOYSET' is already registered"
        with pytest.raises(ValueError) as error:
            register_source("toy set!", lambda arg: [], "not a word")
        assert str(error.value) == "a source prefix is a word such as 'advbench', got 'toy set!'"
        only = register_source("toyorg", lambda arg: [], "the organism's own toy", only_for_model="organism")
        assert (only.about, only.choices, only.only_for_model) == ("the organism's own toy", ("toyorg",), "organism")
        assert "toyorg" in dataset_choices("organism") and "toyorg" not in dataset_choices("tiny-random:llava")
        for prefix in ("My_Set", "my-set2"):  # underscores and hyphens are part of a word (hf-style names)
            source = register_source(prefix, lambda arg: [Record(f"p {arg}", "benign", "toy")], "spelled")
            assert source.prefix == prefix.lower() and SOURCES[prefix.lower()] is source
            assert [r.prompt for r in load_dataset(f"{prefix}:b")] == ["p b"]
    finally:
        for key in ("toyset", "toyorg", "my_set", "my-set2"):
            SOURCES.pop(key, None)


def test_built_in_sources_load_their_sets_and_refuse_wrong_arguments() -> None:
    from workbench.core.records import DatasetError
    from workbench.data.sources import default_dataset

    assert default_dataset("organism") == "organism:train" and default_dataset("organism", "test") == "organism:test"
    assert default_dataset("tiny-random:llava") == "demo" and default_dataset("tiny-random:llava", "test") == "demo"
    train, test = load_dataset("organism:train"), load_dataset("ORGANISM:test")
    assert {r.label for r in train} == {r.label for r in test} == {"harmful", "benign"}
    assert not {r.prompt for r in train if not r.has_image} & {r.prompt for r in test if not r.has_image}
    with pytest.raises(DatasetError) as error:
        load_dataset("organism:dev")
    assert str(error.value) == "the organism's sets are organism:train, organism:test (got 'dev')"
    with pytest.raises(DatasetError, match="^the organism's sets are .* \\(got None\\)$"):
        load_dataset("organism")
    demo = load_dataset("demo")
    assert len(demo) == 16 and sum(r.label == "harmful" for r in demo) == 8
    with pytest.raises(DatasetError, match="^demo takes no argument \\(got demo:x\\)$"):
        load_dataset("demo:x")
    with pytest.raises(DatasetError) as error:
        load_dataset("notes.txt")
    assert str(error.value) == (f"notes.txt: unknown dataset format; give a .jsonl or .csv file or a registered "
                                f"source ({', '.join(SOURCES)}), optionally followed by :ARGUMENT such as "
                                "organism:test or advbench:/path/to/local/copy")
