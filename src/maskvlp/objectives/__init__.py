"""Objectives: one module per loss, registered by name for recipes."""
from maskvlp.objectives.base import Objective, ObjectiveOutput, build_objective, objective_names, register
from maskvlp.objectives import itc, itm, mamo, mlim, mlm, scl, semmim, simla  # noqa: F401  (registration)

__all__ = ["Objective", "ObjectiveOutput", "build_objective", "objective_names", "register"]
