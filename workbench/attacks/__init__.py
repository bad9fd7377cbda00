"""Attacks: inputs made to jailbreak a model. The FigStep-style typographic maker (`typographic`) and visual
adversarial images by PGD (`pgd`: the attack; `job`: `PGDSpec`, `run_pgd_job`, which writes the images and a dataset
the other commands read).
"""
