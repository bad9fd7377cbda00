"""The command line, a thin shell: `main` (the parser and one handler per command), shared argument groups
(`args`), output folders and scorers (`common`), `compare` and the organism's commands. Each handler turns
arguments into a job spec and runs the job.
"""
