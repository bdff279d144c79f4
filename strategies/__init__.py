"""Learn/unlearn strategies. Importing this package registers the built-in ones."""

from strategies.analytic import SPEC as ANALYTIC
from strategies.base import ForgetSet, Strategy, StrategyConfigError, Tags, TaskData
from strategies.hypernet import SPEC as HYPERNET
from strategies.registry import StrategySpec, UnknownStrategy, get, names, register

register(ANALYTIC)
register(HYPERNET)

__all__ = [
    "ForgetSet",
    "Strategy",
    "StrategyConfigError",
    "StrategySpec",
    "Tags",
    "TaskData",
    "UnknownStrategy",
    "get",
    "names",
    "register",
]
