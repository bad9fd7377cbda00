"""Steering: what to steer with (`SteeringVector`), how (`Steering`, the rule registry in `rules`, the one pure
`steer_hidden`), traced generation and teacher forcing under steering (`steering`, `teacher_forcing`), how inputs
are batched for generation (`batching`), and the playground's token view of where the steering acted.
"""
