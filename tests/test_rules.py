"""The rule registry's contract as a user meets it: which names it takes, what it stores, and the messages that
say what to fix (each test here killed mutants that survived `bash scripts/mutation.sh 'workbench.steer.rules*'`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from workbench.steer.rules import RULES, get_rule, register_rule
from workbench.steer.steering import steer_hidden


def _identity(h, unit, direction, alpha, calibration):
    return h


@pytest.fixture
def registry() -> Iterator[None]:
    """The global registry restored as shipped after the test, whatever the test (or a mutant) registered."""
    shipped = dict(RULES)
    yield
    RULES.clear()
    RULES.update(shipped)


def test_a_rule_name_may_hold_underscores_and_keeps_every_field(registry: None) -> None:
    harm = lambda alpha: alpha > 2  # noqa: E731
    rule = register_rule("my_rule", _identity, needs_calibration=True, defence_sign="alpha=3 defends",
                         toward_harm=harm)
    assert get_rule("my_rule") is rule
    assert (rule.name, rule.apply, rule.needs_calibration, rule.defence_sign, rule.toward_harm) == \
        ("my_rule", _identity, True, "alpha=3 defends", harm)


@pytest.mark.parametrize("name", ["", "two words", "a-b", "rule!"])
def test_a_rule_name_that_is_not_a_word_is_refused_with_the_reason(name: str, registry: None) -> None:
    with pytest.raises(ValueError, match=r"a rule name is a word such as 'additive', got "):
        register_rule(name, _identity, needs_calibration=False, defence_sign="x")
    assert name not in RULES


def test_registering_a_taken_name_is_refused_and_the_first_rule_stays(registry: None) -> None:
    before = RULES["additive"]
    with pytest.raises(ValueError, match=r"^steering rule 'additive' is already registered$"):
        register_rule("additive", _identity, needs_calibration=False, defence_sign="x")
    assert RULES["additive"] is before


def test_an_unknown_mode_names_every_known_one() -> None:
    with pytest.raises(ValueError) as error:
        get_rule("nope")
    assert str(error.value) == f"unknown steering mode 'nope'; use one of {', '.join(RULES)}"
    assert "additive, ablation, adaptive" in str(error.value)


def test_adaptive_without_the_benign_mean_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match=r"^adaptive steering needs the benign mean \(calibration\)$"):
        steer_hidden(torch.randn(2, 4), torch.randn(4), "adaptive", 1.0, None)
