"""Attacks: inputs made to jailbreak a model. Today the FigStep-style typographic maker (`typographic`); visual
adversarial images belong here too.
"""
