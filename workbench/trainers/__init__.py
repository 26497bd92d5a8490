"""Trainer glue for the two methods whose loss needs columns plain DPO does not read: RDPO
(the rationale) and LongPO (short-context reference). Small on purpose: the workbench is a data
tool; these show that its exports train, and pin the losses to their known values.

Import the submodules (`losses`, `rdpo`, `longpo`): they need torch, and the trainers TRL.
"""
