"""The jobs a command runs end to end: train, harden, detect, certify, demo.

Each composes the layers below (data, models, attacks, defenses, the evaluation engine)
into one workflow with its own result record; the command line only parses options,
calls one of these and prints.
"""
