"""Core: the model (`models.VLM`, `load_vlm`, the tiny random twins), the one nnsight import, the `Record` type and
its file readers (`records`), run folders and their lock, atomic files, progress with cancel, and torchrun shards.
Everything else in the workbench builds on these; they import nothing of it.
"""
