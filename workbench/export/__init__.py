"""Export: every figure in one style with PNG/SVG export (`plots`) and runnable notebooks made from a run folder
(`notebook`).
"""
